"""NVML through the real pynvml bindings: typed readings and XID events.

Everything here blocks (ctypes calls into libnvidia-ml), so the agent runs it in
threads of its own, never on its event loop. Errors are sorted once, here:
NotSupported and FunctionNotFound (the driver is older than the binding, or the
library lacks the symbol) become `Unsupported`, GpuIsLost marks the GPU lost, and
anything else becomes `Failed` with NVML's own words.

pynvml finds the library with CDLL("libnvidia-ml.so.1"): the driver's copy on a GPU
node (through the NVIDIA container runtime), the test bed's fake through
LD_LIBRARY_PATH (hack/build-fake-nvml.sh).
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pynvml

from swarmops.gpu.health import (
    EVENT_DOUBLE_BIT_ECC,
    WATCHED_EVENTS,
    Failed,
    GpuReading,
    MigReading,
    NodeReading,
    Reading,
    RemappedRows,
    Unsupported,
    XidEvent,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Errors that mean "this check cannot run here", never "unhealthy".
_UNSUPPORTED = (pynvml.NVMLError_NotSupported, pynvml.NVMLError_FunctionNotFound)


class NvmlUnavailable(Exception):
    """NVML cannot be used at all (not initialised, driver gone): start over."""


def error_name(error: pynvml.NVMLError) -> str:
    """`NotSupported` for NVMLError_NotSupported, and so on: short and stable."""
    name = type(error).__name__.removeprefix("NVMLError_")
    return name if name != "NVMLError" else f"NVML error {error.value}"


def describe(error: BaseException) -> str:
    if isinstance(error, pynvml.NVMLError):
        return f"{error_name(error)} ({error})"
    return f"{type(error).__name__}: {error}"


def _handle_address(handle: Any) -> int | None:
    """A handle's address: NVML hands out one stable handle per device."""
    value = ctypes.cast(handle, ctypes.c_void_p).value
    return int(value) if value is not None else None


class _GpuCalls:
    """The reads of one GPU in one poll; remembers whether NVML said the GPU is lost."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.lost = False

    def read(self, fn: Callable[..., T], *args: Any) -> Reading[T]:
        try:
            return fn(self.handle, *args)
        except pynvml.NVMLError_GpuIsLost as error:
            self.lost = True
            return Failed(error_name(error))
        except _UNSUPPORTED as error:
            return Unsupported(error_name(error))
        except pynvml.NVMLError as error:
            return Failed(error_name(error))


def _remapped_rows(handle: Any) -> RemappedRows:
    corrected, uncorrected, pending, failure = pynvml.nvmlDeviceGetRemappedRows(handle)
    return RemappedRows(int(corrected), int(uncorrected), bool(pending), bool(failure))


def _clock_event_reasons(handle: Any) -> int:
    try:
        return int(pynvml.nvmlDeviceGetCurrentClocksEventReasons(handle))
    except pynvml.NVMLError_FunctionNotFound:
        # Drivers before r535 only have the older name of the same bit field.
        return int(pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle))


def _nvlink_active(handle: Any) -> tuple[tuple[int, bool], ...]:
    """(link, active) for each link the GPU has; NotSupported if it has none."""
    links: list[tuple[int, bool]] = []
    first_error: pynvml.NVMLError | None = None
    for link in range(pynvml.NVML_NVLINK_MAX_LINKS):
        try:
            state = pynvml.nvmlDeviceGetNvLinkState(handle, link)
        except (*_UNSUPPORTED, pynvml.NVMLError_InvalidArgument) as error:
            # Links a GPU does not have answer NotSupported or InvalidArgument.
            first_error = first_error or error
            continue
        links.append((link, state == pynvml.NVML_NVLINK_STATE_ACTIVE))
    if not links and first_error is not None:
        raise first_error
    return tuple(links)


def _recovery_action(handle: Any) -> int:
    values = pynvml.nvmlDeviceGetFieldValues(handle, [pynvml.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION])
    # nvmlDeviceGetFieldValues succeeds as a whole and reports each field on its own.
    result = values[0].nvmlReturn
    if result != pynvml.NVML_SUCCESS:
        raise pynvml.NVMLError(result)
    return int(values[0].value.uiVal)


def _mig_devices(handle: Any) -> tuple[MigReading, ...]:
    """The GPU's MIG devices, each found through its own NVML handle."""
    try:
        current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
    except _UNSUPPORTED:
        return ()
    if current != pynvml.NVML_DEVICE_MIG_ENABLE:
        return ()
    devices: list[MigReading] = []
    for index in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, index)
        except pynvml.NVMLError_NotFound:
            continue  # an empty slot
        devices.append(
            MigReading(
                index=index,
                uuid=pynvml.nvmlDeviceGetUUID(mig),
                gpu_instance_id=int(pynvml.nvmlDeviceGetGpuInstanceId(mig)),
                compute_instance_id=int(pynvml.nvmlDeviceGetComputeInstanceId(mig)),
            )
        )
    return tuple(devices)


@dataclass
class _Device:
    index: int
    handle: Any
    uuid: str
    address: int | None


class NvmlSession:
    """An initialised NVML: its devices' handles, reads, and an event set.

    Handles and UUIDs are taken once, at init: a GPU that falls off the bus keeps its
    UUID in our records even though NVML can no longer say it.
    """

    def __init__(self) -> None:
        pynvml.nvmlInit()
        try:
            self.driver_version = str(pynvml.nvmlSystemGetDriverVersion())
            self.devices = [self._device(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except BaseException:
            pynvml.nvmlShutdown()
            raise
        self._by_address = {d.address: d for d in self.devices if d.address is not None}
        self._closed = False

    @staticmethod
    def _device(index: int) -> _Device:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        try:
            uuid = str(pynvml.nvmlDeviceGetUUID(handle))
        except pynvml.NVMLError as error:
            # Lost before we met it: a stable placeholder, so it is still reported.
            logger.warning("GPU %d has no readable UUID: %s", index, describe(error))
            uuid = f"gpu-index-{index}"
        return _Device(index, handle, uuid, _handle_address(handle))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError as error:
                logger.debug("nvmlShutdown: %s", describe(error))

    def read(self, events: dict[str, Reading[int]] | None = None) -> NodeReading:
        """One poll of every GPU. Raises NvmlUnavailable when NVML itself is gone."""
        try:
            count = pynvml.nvmlDeviceGetCount()
        except pynvml.NVMLError as error:
            raise NvmlUnavailable(describe(error)) from error
        gpus = [
            self._read_gpu(device, (events or {}).get(device.uuid))
            for device in self.devices[:count]
        ]
        return NodeReading(driver_version=self.driver_version, gpus=tuple(gpus))

    @staticmethod
    def _read_gpu(device: _Device, events: Reading[int] | None) -> GpuReading:
        calls = _GpuCalls(device.handle)
        name = calls.read(pynvml.nvmlDeviceGetName)
        temperature = calls.read(pynvml.nvmlDeviceGetTemperature, pynvml.NVML_TEMPERATURE_GPU)
        slowdown = calls.read(
            pynvml.nvmlDeviceGetTemperatureThreshold, pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
        )
        shutdown = calls.read(
            pynvml.nvmlDeviceGetTemperatureThreshold, pynvml.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN
        )
        ecc = calls.read(
            pynvml.nvmlDeviceGetTotalEccErrors,
            pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
            pynvml.NVML_VOLATILE_ECC,
        )
        mig = calls.read(_mig_devices)
        reading = GpuReading(
            index=device.index,
            uuid=device.uuid,
            name=name if isinstance(name, str) else "",
            temperature_c=temperature,
            slowdown_c=slowdown,
            shutdown_c=shutdown,
            ecc_uncorrected_volatile=ecc,
            remapped_rows=calls.read(_remapped_rows),
            retired_pages_pending=calls.read(
                lambda h: bool(pynvml.nvmlDeviceGetRetiredPagesPendingStatus(h))
            ),
            clock_event_reasons=calls.read(_clock_event_reasons),
            pcie_width=calls.read(pynvml.nvmlDeviceGetCurrPcieLinkWidth),
            pcie_max_width=calls.read(pynvml.nvmlDeviceGetMaxPcieLinkWidth),
            nvlink_active=calls.read(_nvlink_active),
            recovery_action=calls.read(_recovery_action),
            events=events if events is not None else Failed("events not registered"),
            mig=mig if isinstance(mig, tuple) else (),
        )
        if calls.lost:
            return GpuReading(index=device.index, uuid=device.uuid, name=reading.name, lost=True)
        return reading

    # -- events ------------------------------------------------------------------------------

    def register_events(self) -> tuple[Any, dict[str, Reading[int]]]:
        """An event set with each GPU registered for the XID and double-bit ECC events it
        supports; per GPU, the registered mask or why there is none."""
        event_set = pynvml.nvmlEventSetCreate()
        registered: dict[str, Reading[int]] = {}
        for device in self.devices:
            calls = _GpuCalls(device.handle)
            supported = calls.read(pynvml.nvmlDeviceGetSupportedEventTypes)
            if not isinstance(supported, int):
                registered[device.uuid] = supported
                continue
            mask = supported & WATCHED_EVENTS
            if not mask:
                registered[device.uuid] = Unsupported("NoXidEvents")
                continue
            result = calls.read(pynvml.nvmlDeviceRegisterEvents, mask, event_set)
            registered[device.uuid] = mask if result is None else result
        return event_set, registered

    def free_events(self, event_set: Any) -> None:
        try:
            pynvml.nvmlEventSetFree(event_set)
        except pynvml.NVMLError as error:
            logger.debug("nvmlEventSetFree: %s", describe(error))

    def uuid_of(self, handle: Any) -> str | None:
        """The UUID of the GPU an event names: by handle identity first (works for a
        GPU that is lost), else by asking NVML."""
        address = _handle_address(handle)
        device = self._by_address.get(address) if address is not None else None
        if device is not None:
            return device.uuid
        try:
            return str(pynvml.nvmlDeviceGetUUID(handle))
        except pynvml.NVMLError:
            return None

    def wait_event(self, event_set: Any, timeout_ms: int) -> XidEvent | None:
        """One event, or None after `timeout_ms`. NVML errors other than a timeout raise."""
        try:
            data = pynvml.nvmlEventSetWait(event_set, timeout_ms)
        except pynvml.NVMLError_Timeout:
            return None
        uuid = self.uuid_of(data.device)
        if uuid is None:
            raise NvmlUnavailable("an event named a GPU NVML does not know")
        return XidEvent(
            gpu_uuid=uuid,
            xid=int(data.eventData),
            at=time.time(),
            gpu_instance_id=int(data.gpuInstanceId),
            compute_instance_id=int(data.computeInstanceId),
            double_bit_ecc=bool(int(data.eventType) & EVENT_DOUBLE_BIT_ECC),
        )


class EventThread(threading.Thread):
    """Waits on NVML's event set and hands each event to `on_event` (from this thread).

    Waits time out every `timeout_ms`, so `stop()` ends it within that. A wait that fails
    (other than a timeout) is reported to `on_error` and retried after `retry_s`: the poll
    loop is the one that decides whether NVML is gone.
    """

    def __init__(
        self,
        session: NvmlSession,
        event_set: Any,
        on_event: Callable[[XidEvent], None],
        on_error: Callable[[str], None],
        *,
        timeout_ms: int = 1000,
        retry_s: float = 1.0,
    ) -> None:
        super().__init__(name="nvml-events", daemon=True)
        self._session = session
        self._event_set = event_set
        self._on_event = on_event
        self._on_error = on_error
        self._timeout_ms = timeout_ms
        self._retry_s = retry_s
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                event = self._session.wait_event(self._event_set, self._timeout_ms)
            except (pynvml.NVMLError, NvmlUnavailable) as error:
                self._on_error(describe(error))
                self._stopping.wait(self._retry_s)
                continue
            if event is not None:
                self._on_event(event)
