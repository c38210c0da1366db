"""iovtui: how a packet reaches a virtual machine under device emulation, virtio and SR-IOV."""

__version__ = "0.1.0"
