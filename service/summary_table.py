"""The architecture summary as a fixed-width text table (torchinfo / Keras style)."""

from __future__ import annotations

from .schemas import SummaryResponse


def _dims(values: list[int] | None) -> str:
    return "×".join(str(v) for v in values) if values else "-"


def _kernel(kernel: list[int] | None, dilation: list[int] | None) -> str:
    if dilation and max(dilation) > 1:
        return f"{_dims(kernel)} d{_dims(dilation)}"
    return _dims(kernel)


def render_summary(summary: SummaryResponse) -> str:
    header = ("Layer (type)", "Output shape", "Kernel", "Stride", "Padding", "Param #", "Mult-adds")
    rows = [(f"{r.name} ({r.type})", _dims(r.output_shape), _kernel(r.kernel, r.dilation), _dims(r.stride),
             _dims(r.padding), f"{r.params:,}", f"{r.macs:,}") for r in summary.layers]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        """Text columns left-aligned, numbers right-aligned."""
        aligned = (c.ljust(w) if i < 5 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        return "  ".join(aligned).rstrip()
    rule = "=" * len(line(header))
    t = summary.totals
    return "\n".join([
        f"{summary.model} v{summary.version} — input {_dims(summary.input_shape)} (channels×height×width)",
        rule, line(header), rule, *(line(r) for r in rows), rule,
        f"Total params: {t.total_params:,}",
        f"Trainable params: {t.trainable_params:,}",
        f"Non-trainable params: {t.non_trainable_params:,}",
        f"Mult-adds per image: {t.macs:,}",
        f"Params size (bytes): {t.size_bytes:,}",
        f"ONNX file (bytes): {t.onnx_bytes:,}",
        rule, "",
    ])
