"""Keep a CPU busy for BUSY_MS out of every PERIOD_MS: started by run.sh
(STALL="BUSY_MS PERIOD_MS") at real-time priority on the proxies' CPU, it
takes the CPU away from whichever proxy runs there in the same pattern,
a repeatable stand-in for a hypervisor's steal."""
import sys
import time

busy, period = float(sys.argv[1]) / 1000, float(sys.argv[2]) / 1000
while True:
    start = time.perf_counter()
    while time.perf_counter() - start < busy:
        pass
    time.sleep(period - busy)
