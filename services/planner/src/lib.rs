//! mentat-planner
