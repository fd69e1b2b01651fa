# runtime-matrix's framework check: can the runtime's framework use the GPUs this trial was
# given? Usage: framework.py FRAMEWORK EXPECTED_GPUS. Prints one line,
# "RUNTIME_MATRIX_FRAMEWORK {json}": whether it imports, its CUDA build, the GPUs it sees and
# their compute capabilities, the architectures it was compiled for, and whether a tiny
# computation on the GPU gives the right answer. The harness judges the report.
import json
import sys
import traceback

framework, expected = sys.argv[1], int(sys.argv[2])
report = {
    "framework": framework, "imported": False, "version": None, "cuda_version": None,
    "cuda_available": False, "device_count": 0, "arch_list": [], "capabilities": [],
    "computed": False, "error": None,
}


def torch_check():
    import torch
    report["imported"] = True
    report["version"] = torch.__version__
    report["cuda_version"] = torch.version.cuda
    report["cuda_available"] = torch.cuda.is_available()
    if not report["cuda_available"]:
        return
    report["device_count"] = torch.cuda.device_count()
    report["arch_list"] = list(torch.cuda.get_arch_list())
    report["capabilities"] = ["%d.%d" % torch.cuda.get_device_capability(i) for i in range(report["device_count"])]
    ones = torch.ones(64, 64, device="cuda")
    report["computed"] = (ones @ ones).sum().item() == 64 * 64 * 64


def tensorflow_check():
    import tensorflow as tf
    report["imported"] = True
    report["version"] = tf.__version__
    build = tf.sysconfig.get_build_info()
    report["cuda_version"] = build.get("cuda_version")
    report["arch_list"] = [a for a in build.get("cuda_compute_capabilities", []) if isinstance(a, str)]
    gpus = tf.config.list_physical_devices("GPU")
    report["cuda_available"] = bool(gpus)
    report["device_count"] = len(gpus)
    for gpu in gpus:
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability:
            report["capabilities"].append("%d.%d" % tuple(capability))
    if gpus:
        with tf.device("/GPU:0"):
            ones = tf.ones((64, 64))
            report["computed"] = float(tf.reduce_sum(tf.matmul(ones, ones)).numpy()) == 64 * 64 * 64


def jax_check():
    import jax
    import jax.numpy as jnp
    report["imported"] = True
    report["version"] = jax.__version__
    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    report["cuda_available"] = bool(gpus)
    report["device_count"] = len(gpus)
    report["capabilities"] = [str(d.compute_capability) for d in gpus if getattr(d, "compute_capability", None)]
    if gpus:
        ones = jax.device_put(jnp.ones((64, 64)), gpus[0])
        report["computed"] = float((ones @ ones).sum()) == 64 * 64 * 64


checks = {"torch": torch_check, "tensorflow": tensorflow_check, "jax": jax_check}
try:
    checks[framework]()
except Exception as error:  # the harness reports whatever stopped the check
    report["error"] = "%s: %s" % (type(error).__name__, error)
    report["traceback"] = traceback.format_exc()
print("RUNTIME_MATRIX_FRAMEWORK " + json.dumps(report))
