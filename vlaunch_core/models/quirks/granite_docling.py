"""Granite-Docling: the connector's fine path (four times the image tokens) runs only when the
processor is called with `fine_route=True`; vlaunch encodes with the processor's defaults, so
only the coarse path trains."""

from vlaunch_core.models.quirks import Quirks

QUIRKS = Quirks(
    unused=lambda config: ("model.vision_model.connector.fine",),
    notes=("the connector's fine path (processor fine_route=True) is not trained",),
)
