"""The array module nnforge computes with: NumPy today, CuPy where one is asked for."""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

import numpy as np

from .errors import DeviceError

#: The array module used for new arrays. Kept as a module attribute so a GPU build can swap it.
xp: Any = np

#: Default floating dtype for parameters and inputs.
DEFAULT_DTYPE = np.float32


def get_array_module(*arrays: Any) -> Any:
    """Return the array module (numpy or cupy) that owns the given arrays."""
    for a in arrays:
        mod = type(a).__module__
        if mod.startswith("cupy"):
            import cupy  # noqa: PLC0415 - optional dependency, only when a CuPy array is seen

            return cupy
    return np


def xp_of(a: Any) -> Any:
    """The array module of one array: numpy after one type check, else get_array_module."""
    return np if type(a) is np.ndarray else get_array_module(a)


def is_device_array(a: Any) -> bool:
    """True for an array that lives on a GPU (a CuPy array)."""
    return type(a) is not np.ndarray and type(a).__module__.startswith("cupy")


def to_numpy(a: Any) -> np.ndarray:
    """Return a NumPy copy/view of an array from any backend."""
    if hasattr(a, "get") and not isinstance(a, np.ndarray):
        return a.get()
    return np.asarray(a)


# -- devices -----------------------------------------------------------------------------------
# A device is "cpu" (NumPy arrays) or "cuda" / "cuda:N" (CuPy arrays on GPU N; "cuda" is CuPy's
# current device, normally 0). Arrays move only when asked: to_device, Module.to, the Trainer.
_INSTALL_HINT = "pip install nnforge[gpu]"
_GPU_COUNT: list[Any] = [None, 0]  # [the cupy module asked, how many GPUs it sees]


def parse_device(device: Any) -> tuple[str, int | None]:
    """("cpu", None) or ("cuda", index or None) for a device name; DeviceError otherwise."""
    name = device.strip().lower() if isinstance(device, str) else None
    if name == "cpu":
        return "cpu", None
    if name == "cuda":
        return "cuda", None
    if name is not None and name.startswith("cuda:") and name[5:].isdigit():
        return "cuda", int(name[5:])
    raise DeviceError(f"expected a device 'cpu', 'cuda' or 'cuda:N', found {device!r}")


def is_device_name(value: Any) -> bool:
    """True when value names a device ('cpu', 'cuda', 'cuda:N'); nothing is imported."""
    try:
        parse_device(value)
    except DeviceError:
        return False
    return True


def cupy_module(device: Any = "cuda") -> Any:
    """CuPy, checked to see a GPU (and GPU N for 'cuda:N'); DeviceError with the fix if not."""
    try:
        import cupy  # noqa: PLC0415 - optional dependency
    except ImportError as exc:
        raise DeviceError(f"device {device!r} needs CuPy, which is not installed ({exc}): "
                          f"{_INSTALL_HINT}") from None
    count = _GPU_COUNT[1] if _GPU_COUNT[0] is cupy else None
    try:
        if count is None:
            count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # CUDARuntimeError: no driver, no GPU, a broken install
        raise DeviceError(f"device {device!r}: CuPy finds no usable CUDA GPU "
                          f"({type(exc).__name__}: {exc}); on a machine with an NVIDIA GPU and "
                          f"driver: {_INSTALL_HINT}") from None
    _GPU_COUNT[:] = [cupy, count]  # asked once: the Trainer moves every batch
    if count < 1:
        raise DeviceError(f"device {device!r}: CuPy sees no CUDA GPU; on a machine with an "
                          f"NVIDIA GPU and driver: {_INSTALL_HINT}")
    index = parse_device(device)[1]
    if index is not None and index >= count:
        raise DeviceError(f"device {device!r} does not exist: this machine has {count} CUDA "
                          f"GPU(s), cuda:0 to cuda:{count - 1}")
    return cupy


def device_of(a: Any) -> str:
    """Where an array, a Tensor or a Module (its first parameter or buffer) lives: 'cpu', or
    'cuda:N' for CuPy arrays."""
    if type(a) is np.ndarray:
        return "cpu"
    from .autograd.tensor import Tensor  # noqa: PLC0415 - tensor.py imports this module
    from .nn.module import Module  # noqa: PLC0415

    if isinstance(a, Module):  # 'cpu' when it holds no arrays
        first = next(iter([p.data for p in a.parameters()] + a.buffers()), None)
        return "cpu" if first is None else device_of(first)
    if isinstance(a, Tensor):
        a = a.data
    if is_device_array(a):
        return f"cuda:{a.device.id}"
    return "cpu"


def to_device(a: Any, device: Any) -> Any:
    """The array on `device` ('cpu', 'cuda', 'cuda:N'): itself when it is there already."""
    kind, index = parse_device(device)
    if kind == "cpu":
        return to_numpy(a) if is_device_array(a) else a
    cupy = cupy_module(device)
    if is_device_array(a) and (index is None or a.device.id == index):
        return a
    if index is None:
        return cupy.asarray(a)
    with cupy.cuda.Device(index):
        return cupy.asarray(a)


def device_scope(device: Any) -> Any:
    """A context in which CuPy makes new arrays on `device`'s GPU (nothing to do for 'cpu')."""
    kind, index = parse_device(device)
    if kind == "cpu" or index is None:
        return contextlib.nullcontext()
    return cupy_module(device).cuda.Device(index)


def same_device_as(a: Any, like: Any) -> Any:
    """a (an array, list or number) as an array on the device of the array `like`."""
    if type(like) is np.ndarray or not is_device_array(like):
        return to_numpy(a) if is_device_array(a) else np.asarray(a)
    if is_device_array(a) and a.device.id == like.device.id:
        return a
    cupy = get_array_module(like)
    with like.device:
        return cupy.asarray(a)


def usable_cpus() -> int:
    """CPUs this process may run on (respects taskset/cgroups affinity, unlike os.cpu_count)."""
    import os  # noqa: PLC0415

    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def is_float_dtype(dtype: Any) -> bool:
    """True when dtype is a floating point dtype."""
    # the kind letter, not np.issubdtype: this runs for every op's output (3 us -> 0.1 us)
    return np.dtype(dtype).kind == "f"


# -- BLAS threads ----------------------------------------------------------------------------
# nnforge splits some work over its own threads (the convolutions' batch chunks, the compiled
# plans' kernels). While it does, BLAS must run on one thread: OpenBLAS's workers spin for a
# while after each threaded call and would compete with ours for the same cores (measured on
# LeNet-5 training with 2 cores: 1.65 s per epoch with BLAS on one thread against 1.85-2.3 s).
class _SerialBlas:
    """Reference-counted switch of the BLAS libraries to one thread (process-wide)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.saved: list[int] = []
        self.libs: list[Any] | None = None

    def _controllers(self) -> list[Any]:
        if self.libs is None:
            try:
                from threadpoolctl import ThreadpoolController  # noqa: PLC0415 - optional
            except ImportError:  # without it BLAS keeps its threads; results are the same
                self.libs = []
            else:
                self.libs = [c for c in ThreadpoolController().lib_controllers
                             if c.user_api == "blas"]
        return self.libs

    def available(self) -> bool:
        """True when the BLAS thread count can be switched (threadpoolctl found a BLAS)."""
        return bool(self._controllers())

    def enter(self) -> None:
        """First caller in: remember the BLAS thread counts and set them to 1."""
        with self.lock:
            if self.depth == 0:
                libs = self._controllers()
                self.saved = [c.get_num_threads() for c in libs]
                for c in libs:
                    c.set_num_threads(1)
            self.depth += 1

    def exit(self) -> None:
        """Last caller out: restore the BLAS thread counts."""
        with self.lock:
            self.depth -= 1
            if self.depth == 0:
                for c, n in zip(self.libs or [], self.saved):
                    c.set_num_threads(n)

    @contextlib.contextmanager
    def serial(self, active: bool = True) -> Iterator[None]:
        """enter() ... exit() around a block (a no-op when not `active`)."""
        if not active:
            yield
            return
        self.enter()
        try:
            yield
        finally:
            self.exit()


SERIAL_BLAS = _SerialBlas()

#: OpenBLAS cores whose sgemm/dgemm take an unpacked "small matrix" path when M*N*K <= 100**3
#: (OpenBLAS's gemm_small_kernel_permit for these cores; every other core's permit says no)
_SMALL_GEMM_CORES = frozenset({"skylakex", "cooperlake", "sapphirerapids"})
_SMALL_GEMM_MNK = 100 ** 3


def blas_small_gemm_mnk() -> int:
    """Largest M*N*K that BLAS multiplies on its small-matrix path; 0 when it has none.

    On those cores a skinny product such as a convolution's 6x26 weights times a few samples'
    columns runs 1.3-5x faster on that path than on the packed one just above the limit
    (measured: 6x26x3584 at 34 GFLOP/s against 6x26x7168 at 6 GFLOP/s), so kernels that
    choose their own product sizes keep below it.
    """
    try:  # NumPy's own BLAS must be OpenBLAS (other libraries' controllers are listed too)
        numpy_blas = str(np.__config__.CONFIG["Build Dependencies"]["blas"]["name"])
    except (AttributeError, KeyError, TypeError):
        return 0
    cores = {str(getattr(c, "architecture", "")).lower() for c in SERIAL_BLAS._controllers()
             if c.internal_api == "openblas"}
    small = "openblas" in numpy_blas.lower() and cores and cores <= _SMALL_GEMM_CORES
    return _SMALL_GEMM_MNK if small else 0
