//! mentat-store
