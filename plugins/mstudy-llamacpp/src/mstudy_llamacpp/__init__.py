"""mstudy-llamacpp: the ``llamacpp`` teacher for mstudy, GGUF models run by llama.cpp.

::

    import mstudy

    study = mstudy.Study("llamacpp", ["reverse"])                 # the embedded SmolLM2
    teacher = mstudy_llamacpp.LlamaCppTeacher("models/qwen2.5-7b-instruct-q4_k_m.gguf")

Importing this package does not import ``llama_cpp`` (the ``[llama]`` extra); the model is
loaded when the teacher first needs it.
"""

from __future__ import annotations

from mstudy_llamacpp.models import ModelSource, embedded_gguf
from mstudy_llamacpp.teacher import LlamaCppTeacher

__version__ = "0.1.0"

__all__ = ["LlamaCppTeacher", "ModelSource", "__version__", "embedded_gguf"]
