"""What the tests share, behind the fixtures of ``tests/conftest.py``, and the code they run in child processes.

Plain functions the fixtures wrap:

- ``data``: crops, crop stores, Sign-MNIST CSVs and YOLO datasets written into a test's folder.
- ``models``: the tiny model, a brief fit, a run folder as training leaves it, a random batch.
- ``configs``: tiny training and search settings that run in seconds on 2 CPU cores.
- ``processes``: the CLI in-process or in a child, Python in a fresh interpreter, worker processes.

Entry points, each run as ``python -m tests.support.NAME`` in a fresh interpreter (TensorFlow can set up
logical devices, a cluster or a kill only before or apart from the test process):

- ``distribute_worker``: one worker of a multi-worker run, or a run on 2 mirrored logical CPUs.
- ``tune_worker``: the chief or a worker of a distributed search.
- ``batchnorm_mirrored``: synchronized BatchNormalization on 2 logical CPUs against the global batch.
- ``device_check``: the device check of ``yolol-tf doctor`` with a second logical CPU standing in for a GPU.
- ``killable_train``: a training run slow enough to be killed in its second epoch, and its resume.
- ``paused_prepare``: ``yolol-tf prepare`` paused at its first crop, to be interrupted.
"""
