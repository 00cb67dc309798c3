"""Read-only NVML probe: which profile-info call forms a real driver answers, and how.

Run on a host with a real GPU: python3 tests/hardware/nvml_probe.py
Only queries; never changes MIG mode, instances, clocks or anything else.
"""

from __future__ import annotations

import ctypes

import pynvml


def main() -> None:
    pynvml.nvmlInit()
    print("driver", pynvml.nvmlSystemGetDriverVersion(), "nvml", pynvml.nvmlSystemGetNVMLVersion())
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        print(index, pynvml.nvmlDeviceGetName(handle), pynvml.nvmlDeviceGetUUID(handle))
        print(" mig mode", pynvml.nvmlDeviceGetMigMode(handle))
        for profile in range(pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT):
            for version in (2, 1):
                try:
                    info = pynvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, profile, version)
                    name = getattr(info, "name", b"")
                    print(" profile %d v%d id %d name %r" % (profile, version, info.id, name))
                except pynvml.NVMLError as exc:
                    print(
                        " profile %d v%d err %s(%s)"
                        % (profile, version, type(exc).__name__, exc.value)
                    )
        count = ctypes.c_uint(8)
        array = (pynvml.c_nvmlGpuInstance_t * 8)()
        try:
            pynvml.nvmlDeviceGetGpuInstances(handle, 19, array, ctypes.byref(count))
            print(" gpu instances of profile 19:", count.value)
        except pynvml.NVMLError as exc:
            print(" nvmlDeviceGetGpuInstances err %s(%s)" % (type(exc).__name__, exc.value))
        try:
            print(
                " processes",
                [p.__dict__ for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)],
            )
        except pynvml.NVMLError as exc:
            print(" processes err %s(%s)" % (type(exc).__name__, exc.value))
    pynvml.nvmlShutdown()


if __name__ == "__main__":
    main()
