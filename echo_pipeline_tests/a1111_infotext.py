"""Test helper: an independent port of AUTOMATIC1111's infotext reader and quoting.

Ported from stable-diffusion-webui, `modules/infotext_utils.py` (AUTOMATIC1111/stable-diffusion-webui,
AGPL-3.0; functions `quote`, `unquote`, `parse_generation_parameters` and the module-level regexes
`re_param_code` / `re_imagesize`; plus the parameter-line join of `create_infotext` in
`modules/processing.py`), so tests can check that what we write reads back in A1111 the way
we mean it, without depending on our own parser.

Kept exactly: the regexes, the "last line holds the parameters only when it has at least 3
`key: value` pairs" rule, the prompt / "Negative prompt:" line handling, `unquote` of values that
start and end with '"', the `WxH` -> `Key-1` / `Key-2` split, and A1111's behaviour of dropping a key
whose value is empty (its `v[0]` raises IndexError, which it catches and prints).

Left out (they depend on the running webui's state): style extraction from the prompt
(`opts.infotext_styles`, assumed "Ignore"), `infotext_versions.backcompat` and
`opts.infotext_skip_pasting`. The webui's fill-in defaults ("Clip skip": "1", "RNG": "GPU", ...) and
the old hires-fix size restore (with `use_old_hires_fix_width_height` False) are applied only when
`fill_defaults=True`.
"""

from __future__ import annotations

import json
import re

re_param_code = r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)'
re_param = re.compile(re_param_code)
re_imagesize = re.compile(r"^(\d+)x(\d+)$")


def quote(text):
    if ',' not in str(text) and '\n' not in str(text) and ':' not in str(text):
        return text

    return json.dumps(text, ensure_ascii=False)


def unquote(text):
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text

    try:
        return json.loads(text)
    except Exception:
        return text


def create_generation_params_text(generation_params: dict) -> str:
    """The last infotext line as A1111's `create_infotext` joins it (None values left out)."""
    return ", ".join([k if k == v else f'{k}: {quote(v)}' for k, v in generation_params.items() if v is not None])


def _old_hires_fix_first_pass_dimensions(width, height):
    """modules/processing.py `old_hires_fix_first_pass_dimensions`."""
    import math

    desired_pixel_count = 512 * 512
    actual_pixel_count = width * height
    scale = math.sqrt(desired_pixel_count / actual_pixel_count)
    width = math.ceil(scale * width / 64) * 64
    height = math.ceil(scale * height / 64) * 64
    return width, height


def _restore_old_hires_fix_params(res):
    firstpass_width = res.get('First pass size-1', None)
    firstpass_height = res.get('First pass size-2', None)

    if firstpass_width is None or firstpass_height is None:
        return

    firstpass_width, firstpass_height = int(firstpass_width), int(firstpass_height)
    width = int(res.get("Size-1", 512))
    height = int(res.get("Size-2", 512))

    if firstpass_width == 0 or firstpass_height == 0:
        firstpass_width, firstpass_height = _old_hires_fix_first_pass_dimensions(width, height)

    res['Size-1'] = firstpass_width
    res['Size-2'] = firstpass_height
    res['Hires resize-1'] = width
    res['Hires resize-2'] = height


def parse_generation_parameters(x: str, *, fill_defaults: bool = False) -> dict:
    """A1111's reader: dict with "Prompt", "Negative prompt" and the last line's parameters."""
    res = {}

    prompt = ""
    negative_prompt = ""

    done_with_prompt = False

    *lines, lastline = x.strip().split("\n")
    if len(re_param.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ''

    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[16:].strip()
        if done_with_prompt:
            negative_prompt += ("" if negative_prompt == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line

    res["Prompt"] = prompt
    res["Negative prompt"] = negative_prompt

    for k, v in re_param.findall(lastline):
        try:
            if v[0] == '"' and v[-1] == '"':
                v = unquote(v)

            m = re_imagesize.match(v)
            if m is not None:
                res[f"{k}-1"] = m.group(1)
                res[f"{k}-2"] = m.group(2)
            else:
                res[k] = v
        except Exception:
            pass  # A1111 prints 'Error parsing "k: v"' and goes on

    if not fill_defaults:
        return res

    if "Clip skip" not in res:
        res["Clip skip"] = "1"

    hypernet = res.get("Hypernet")
    if hypernet is not None:
        res["Prompt"] += f"""<hypernet:{hypernet}:{res.get("Hypernet strength", "1.0")}>"""

    if "Hires resize-1" not in res:
        res["Hires resize-1"] = 0
        res["Hires resize-2"] = 0

    for key, default in (
        ("Hires sampler", "Use same sampler"),
        ("Hires checkpoint", "Use same checkpoint"),
        ("Hires prompt", ""),
        ("Hires negative prompt", ""),
        ("Mask mode", "Inpaint masked"),
        ("Masked content", "original"),
        ("Inpaint area", "Whole picture"),
        ("Masked area padding", 32),
    ):
        if key not in res:
            res[key] = default

    _restore_old_hires_fix_params(res)

    for key, default in (
        ("RNG", "GPU"),
        ("Schedule type", "Automatic"),
        ("Schedule max sigma", 0),
        ("Schedule min sigma", 0),
        ("Schedule rho", 0),
        ("VAE Encoder", "Full"),
        ("VAE Decoder", "Full"),
        ("FP8 weight", "Disable"),
    ):
        if key not in res:
            res[key] = default

    if "Cache FP16 weight for LoRA" not in res and res["FP8 weight"] != "Disable":
        res["Cache FP16 weight for LoRA"] = False

    return res
