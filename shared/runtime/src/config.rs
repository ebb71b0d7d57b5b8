//! The service config file (`mentat.yaml`).
