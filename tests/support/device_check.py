"""The device check on 2 logical CPUs, run in a fresh process (logical devices can only be set up before
TensorFlow starts):

    python -m tests.support.device_check

/CPU:1 stands in for a GPU: the variables and the step's ops are placed on it and compared with /CPU:0, once
as they are (with and without XLA) and once with a runner that perturbs one output by 10%. Prints, as its
last line, a JSON list of the two results.
"""

from __future__ import annotations

import json
from dataclasses import replace


def main() -> None:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from yolol_tf.doctor.compare import check_devices, run_step

    def off(device, jit=False):
        step = run_step(device, jit=jit)
        if device == "/CPU:1":
            outputs = {**step.outputs, "probe_dense_relu": step.outputs["probe_dense_relu"] * 1.1}
            step = replace(step, outputs=outputs)
        return step

    same, wrong = check_devices(["/CPU:1"], xla=True), check_devices(["/CPU:1"], xla=False, runner=off)
    print(json.dumps([same.to_dict(), wrong.to_dict()]))


if __name__ == "__main__":
    main()
