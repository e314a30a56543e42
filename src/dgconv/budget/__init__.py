"""The budget: what a grouping costs and how training keeps within it. :mod:`~dgconv.budget.costs` (connections,
MACs and latency per layer, with their straight-through gradients) -> :mod:`~dgconv.budget.constraint` (the objective
of §3.3 read from the modules, the budget ``o``, the projection, the optimizer's parameter groups);
:mod:`~dgconv.budget.latency` (measuring, saving and trusting latency tables, which time deployed layers)."""
