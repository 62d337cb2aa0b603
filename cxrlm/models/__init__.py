"""Load a CXR vision-language model from a local folder and run CXR tasks on it, into one output schema.

`load_model(path)` picks the profile (family, prompt dialect, box format, image budget), which names the family
record (cxrlm.models.families) that loads the folder;
`CxrModel.predict(image, task)` returns a `ModelOutput`. Nothing here downloads anything.
"""

import dataclasses
import os
import sys
import time
from pathlib import Path

from cxrlm.errors import ModelLoadError
from cxrlm.models.profiles import ModelProfile, resolve_profile

DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[2] / "weights" / "cxrlm-tiny"


def default_model_dir() -> Path:
    """$CXRLM_MODEL, else the shipped cxrlm-tiny."""
    env = os.environ.get("CXRLM_MODEL")
    if env:
        return Path(env)
    if (DEFAULT_MODEL_DIR / "config.json").is_file():
        return DEFAULT_MODEL_DIR
    raise ModelLoadError(
        "no --model given and no default model is installed: pass --model DIR (a Qwen2.5-VL checkpoint folder), "
        "or make a random-weight test checkpoint with `cxrlm models tiny DIR`"
    )


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {device} asked for, but no CUDA GPU is visible: use --device cpu")
    return device


def resolve_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise ModelLoadError(f"unknown --dtype {dtype!r}; use one of auto, {', '.join(names)}")
    return names[dtype]


ENGINES = ("hf", "fast", "remote", "vllm")
QUANTIZE = ("none", "int8")  # cxrlm.models.int8


def load_model(
    path: str | Path | None = None, *, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False,
    engine: str = "hf", calibration: str | None = None, quantize: str = "none", **engine_options,
):
    """Load a checkpoint folder. `trust_remote_code` lets a checkpoint with no built-in family run its own Python.

    calibration: a calibration file (`cxrlm calibrate`), "none" for raw probabilities, or None: the folder's
    calibration.json if it has one (cxrlm.models.calibration).

    engine: "hf" (plain transformers), "fast" (static KV cache, continuous batching; options: max_batch, max_len,
    cuda_graphs), "remote" (`path` is an OpenAI-compatible server URL such as http://host:8000/v1; an http(s)
    URL picks it by itself; options: model_name, profile, api_key, max_concurrency, timeout_s, retries) or "vllm"
    (vLLM in-process, cxrlm.engines.vllm; options: max_len, max_images).

    quantize: "none", or "int8" for int8 language-model weights on the CPU (hf and fast engines; cxrlm.models.int8).
    """
    from cxrlm.models.base import CxrModel

    if engine not in ENGINES:
        raise ModelLoadError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    if quantize not in QUANTIZE:
        raise ModelLoadError(f"unknown quantize {quantize!r}; use one of {', '.join(QUANTIZE)}")
    if quantize != "none" and engine not in ("hf", "fast"):
        raise ModelLoadError(f"--quantize {quantize} applies to the hf and fast engines, not {engine!r}")
    from cxrlm.models import calibration as calibrations

    if engine == "remote" or str(path or "").startswith(("http://", "https://")):
        model = _load_remote(str(path or ""), **engine_options)
        model.calibration = calibrations.find(None, calibration)
        return model
    if engine == "hf" and engine_options:
        raise ModelLoadError(f"engine options {', '.join(engine_options)} apply to the fast or remote engine only")
    model_dir = Path(path) if path else default_model_dir()
    if not model_dir.is_dir():
        raise ModelLoadError(f"model folder {model_dir} does not exist: pass --model DIR with a checkpoint folder")
    if not os.access(model_dir, os.R_OK | os.X_OK):
        raise ModelLoadError(f"model folder {model_dir} is not readable: check its permissions")
    profile = resolve_profile(model_dir)
    calibrated = calibrations.find(model_dir, calibration)  # a bad file fails before the weights load
    if profile.remote_code:
        _check_remote_code(model_dir, trust_remote_code)
    device = resolve_device(device)
    start = time.perf_counter()
    if engine == "vllm":
        backend = _load_vllm(model_dir, profile, device, dtype, **engine_options)
        return CxrModel(model_dir.name, profile, backend, load_s=time.perf_counter() - start, calibration=calibrated)
    backend = _load_engine(model_dir, profile, device, resolve_dtype(dtype, device))
    if quantize != "none":
        from cxrlm.models import int8

        int8.quantize(backend.model, device, resolve_dtype(dtype, device))
    if engine == "fast":
        from cxrlm.engines.fast import FastEngine

        backend = FastEngine(backend.model, backend.processor, backend.device, **engine_options)
    if quantize != "none":  # no gradients pass through int8 layers: heatmaps need the unquantized model
        backend.capabilities = dataclasses.replace(backend.capabilities, heatmaps=False)
    return CxrModel(model_dir.name, profile, backend, load_s=time.perf_counter() - start, calibration=calibrated)


def _load_remote(url: str, profile: str = "nv-reason-cxr", **options):
    """A CxrModel whose engine is a remote server; `profile` names the prompts and box format of what it serves."""
    from cxrlm import box_formats
    from cxrlm.engines.remote import RemoteEngine
    from cxrlm.models.base import CxrModel
    from cxrlm.models.profiles import PROFILES

    if profile not in PROFILES:
        raise ModelLoadError(f"unknown profile {profile!r} for the remote model; known: {', '.join(PROFILES)}")
    if not url.startswith(("http://", "https://")):
        raise ModelLoadError(f"engine 'remote' needs a server URL such as http://host:8000/v1, not {url!r}")
    start = time.perf_counter()
    if box_formats.get(PROFILES[profile].box_format).in_pixels:  # pixels of the model's input: send that frame
        options.setdefault("input_frame", _qwen_frame(PROFILES[profile]))
    engine = RemoteEngine(url, **options)
    return CxrModel(engine.model_name, PROFILES[profile], engine, load_s=time.perf_counter() - start)


def _load_vllm(model_dir: Path, profile: ModelProfile, device: str, dtype: str, **options):
    """vLLM in-process on the folder, with the family's chat template and the profile's image budget."""
    from transformers import AutoProcessor

    from cxrlm import box_formats
    from cxrlm.engines.vllm import VllmEngine, import_vllm
    from cxrlm.models.families import FAMILIES

    import_vllm()  # a missing vLLM is a one-line error before anything loads
    if profile.remote_code:
        raise ModelLoadError(f"engine 'vllm' runs only the families vLLM implements, not {model_dir}'s own code")
    name = str(resolve_dtype(dtype, device)).removeprefix("torch.")
    args = FAMILIES[profile.family].processor_args(profile.min_pixels, profile.max_pixels)
    processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True, **args)
    frame = _qwen_frame(profile) if box_formats.get(profile.box_format).in_pixels else None
    try:
        return VllmEngine(model_dir, processor, args, name, frame=frame, **options)
    except (OSError, ValueError, RuntimeError) as err:  # vLLM's own messages: an unsupported architecture, memory
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(f"vLLM cannot load {model_dir}: {first_line}") from None


def _qwen_frame(profile: ModelProfile):
    """(width, height) -> the size Qwen2-VL's processor resizes to under the profile's pixel budget."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    def frame(width: int, height: int) -> tuple[int, int]:
        rows, cols = smart_resize(height, width, factor=28, min_pixels=profile.min_pixels,
                                  max_pixels=profile.max_pixels)
        return cols, rows

    return frame


def _check_remote_code(model_dir: Path, trust_remote_code: bool) -> None:
    if not trust_remote_code:
        raise ModelLoadError(
            f"{model_dir} is not a built-in family and ships its own Python code (config.json auto_map); "
            "it runs only with --trust-remote-code, and only if you trust its authors"
        )
    print(
        f"WARNING: trust_remote_code is on: running Python code shipped in {model_dir} with your permissions",
        file=sys.stderr,
    )


def _load_engine(model_dir: Path, profile: ModelProfile, device: str, dtype):
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    from cxrlm.models.families import FAMILIES

    try:
        return FAMILIES[profile.family].load(model_dir, profile, device, dtype)
    except (OSError, ValueError, KeyError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(f"cannot load the checkpoint in {model_dir}: {first_line}") from None
