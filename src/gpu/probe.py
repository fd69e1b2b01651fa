# runtime-matrix's GPU probe: what NVML shows from where this runs (inside a container: what
# the container was given). Python 3 and ctypes only, no packages. Prints one line,
# "RUNTIME_MATRIX_PROBE {json}", with the driver, the CUDA driver version and each visible GPU;
# when NVML cannot be loaded or initialised it says so in "error" and lists no GPU.
import ctypes
import json

NVML_SUCCESS = 0


def probe():
    result = {"nvml": False, "error": None, "driver": None, "cuda_driver": None, "gpus": []}
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError as error:
        result["error"] = "libnvidia-ml.so.1 cannot be loaded: %s" % error
        return result

    def call(name, *args):
        function = getattr(nvml, name, None)
        if function is None:
            raise RuntimeError("%s is missing from libnvidia-ml.so.1" % name)
        code = function(*args)
        if code != NVML_SUCCESS:
            text = nvml.nvmlErrorString
            text.restype = ctypes.c_char_p
            raise RuntimeError("%s failed: %s" % (name, text(code).decode(errors="replace")))

    try:
        call("nvmlInit_v2")
    except RuntimeError as error:
        result["error"] = str(error)
        return result
    result["nvml"] = True
    try:
        driver = ctypes.create_string_buffer(96)
        call("nvmlSystemGetDriverVersion", driver, ctypes.c_uint(96))
        result["driver"] = driver.value.decode()
        cuda = ctypes.c_int()
        call("nvmlSystemGetCudaDriverVersion_v2", ctypes.byref(cuda))
        result["cuda_driver"] = cuda.value
        count = ctypes.c_uint()
        call("nvmlDeviceGetCount_v2", ctypes.byref(count))
        for index in range(count.value):
            device = ctypes.c_void_p()
            call("nvmlDeviceGetHandleByIndex_v2", ctypes.c_uint(index), ctypes.byref(device))
            uuid = ctypes.create_string_buffer(96)
            call("nvmlDeviceGetUUID", device, uuid, ctypes.c_uint(96))
            name = ctypes.create_string_buffer(96)
            call("nvmlDeviceGetName", device, name, ctypes.c_uint(96))

            class Memory(ctypes.Structure):
                _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]

            memory = Memory()
            call("nvmlDeviceGetMemoryInfo", device, ctypes.byref(memory))
            major, minor = ctypes.c_int(), ctypes.c_int()
            call("nvmlDeviceGetCudaComputeCapability", device, ctypes.byref(major), ctypes.byref(minor))
            result["gpus"].append({
                "index": index,
                "uuid": uuid.value.decode(),
                "name": name.value.decode(),
                "memory_mib": memory.total // (1024 * 1024),
                "compute_capability": "%d.%d" % (major.value, minor.value),
            })
    except RuntimeError as error:
        result["error"] = str(error)
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass
    return result


print("RUNTIME_MATRIX_PROBE " + json.dumps(probe()))
