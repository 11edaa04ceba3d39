"""The ``ecgedge`` command: a thin dispatcher over sdk, trainer, export and firmware_bridge.

Each subcommand imports only what it needs, so ``ecgedge demo`` and ``ecgedge stream``
run on a device install without torch.
"""
