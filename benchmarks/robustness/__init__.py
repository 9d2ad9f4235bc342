"""``eat bench``: the Fashion-MNIST robustness benchmark, resumable row by row.

Every defense is trained by the same loop on the same data under one stated budget
(:class:`~.profiles.Profile`), then evaluated clean (full test set) and under attack (a
stratified subset of the test set, query set = gallery): the headline ε = 0.1 with
PGD-20 (ES, QA, CA on all samples and on a fraction p), and the RobRank setting ε = 0.3
with 32 steps. Vanilla, the best baseline and EAT also get the ε sweep and the
gradient-masking checks (more steps, restarts, transfer from a vanilla surrogate).

Each row's training record and evaluations are stored in ``OUT/rows/ROW.json`` as they
finish, so an interrupted run resumes where it stopped; ``--only ROW`` re-runs rows.
The report (``results.json``, ``results.md``, PNG plots) is rebuilt from the row files.

* :mod:`.profiles`: the budgets (full, quick) and the attack settings (headline ε, …);
* :mod:`.rows`: the rows, in the order of the table, and the named selections of rows;
* :mod:`.runner`: training and evaluating rows into ``OUT/rows`` (:class:`~.runner.Bench`);
* :mod:`.report`: ``results.json``, ``results.md`` and the plots, from the row files;
* :mod:`.ship`: ``eat bench --ship``, the demo models copied into ``assets/models``;
* :mod:`.cli`: the ``eat bench`` command line.
"""
