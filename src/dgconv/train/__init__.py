"""The trainer behind ``dgconv train``: what defines a run (:mod:`~dgconv.train.config`), the loop
(:mod:`~dgconv.train.engine`), the run directory and its files (:mod:`~dgconv.train.rundir`,
:mod:`~dgconv.train.checkpoint`), processes and signals (:mod:`~dgconv.train.distributed`,
:mod:`~dgconv.train.interrupts`), progress, pretrained weights and the data (:mod:`dgconv.train.data`).

It builds on the core (layers, costs, constraint, conversions, models) and never the other way round.
"""
