//! mentat-router
