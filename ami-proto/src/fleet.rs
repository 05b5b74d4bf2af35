//! Many clients on one loop: per-step budgets with a rotating start (work in progress).
