//! mentat-health-watcher
