"""The leaf operators of the rule language, registered on import (engine.registry): generic ones here,
disease-specific ones in `cds_service.domains`. Importing this package registers them all."""

from cds_service import domains
from cds_service.operators import conditions, demographics, measurements, medications

__all__ = ["conditions", "demographics", "domains", "measurements", "medications"]
