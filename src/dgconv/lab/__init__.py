"""The lab: the paper's experiments as data (:mod:`~dgconv.lab.protocols`), the sweep runner
(:mod:`~dgconv.lab.sweep`), the results document (:mod:`~dgconv.lab.results`), run reports
(:mod:`~dgconv.lab.report`) and the statistics they use (:mod:`~dgconv.lab.stats`).

It reads run directories through :mod:`dgconv.train.rundir` and trains through a runner it is given; nothing in the
trainer or the core imports it.
"""
