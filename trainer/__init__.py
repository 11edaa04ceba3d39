"""ecgedge training side: data readers, diffusion models, training loops, probes, benchmarks.

Entry points: :func:`trainer.config.load_preset`, :func:`trainer.train_diffusion.train`,
:func:`trainer.probe.run_probe`; data through :mod:`trainer.data`.
"""

__all__: list[str] = []
