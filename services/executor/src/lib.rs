//! mentat-executor
