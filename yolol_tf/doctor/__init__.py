"""Checking the machine before trusting it: ``yolol-tf doctor`` and the device check before training.

    compare.py  one fixed training step on the CPU and on each GPU, compared within a float32 tolerance
    gate.py     before ``train`` uses a GPU: the comparison once per machine (cached), the GPU hidden
                when it disagrees
    report.py   ``yolol-tf doctor``: versions, devices, CPU, ``train``'s defaults and the comparison

``diagnose()`` returns the report; ``check_devices()`` the comparison alone;
``check_devices_before_training()`` is what ``train`` calls. TensorFlow is imported only inside them.
"""

from yolol_tf.doctor.compare import ATOL, RTOL, DeviceResult, DeviceVerdict, check_devices
from yolol_tf.doctor.gate import check_devices_before_training
from yolol_tf.doctor.report import DoctorReport, diagnose, format_report

__all__ = [
    "ATOL",
    "RTOL",
    "DeviceResult",
    "DeviceVerdict",
    "DoctorReport",
    "check_devices",
    "check_devices_before_training",
    "diagnose",
    "format_report",
]
