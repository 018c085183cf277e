"""CDS Hooks handlers, one module per hook, each registered with `@hook` (see `registry`).

Importing this package registers every handler. Adding a hook: write `<hook>.py` here with a handler
registered for the hook's name and the JSON Schema of its context, import it below, and list a service for
it in `mappings/services.yaml`.
"""

from cds_service.hooks import orders, patient_view
from cds_service.hooks.registry import (
    HOOKS,
    Card,
    Hook,
    HookCall,
    RememberWarned,
    Runtime,
    Warned,
    answer,
    check_services,
    hook,
    prepare,
)

__all__ = [
    "HOOKS",
    "Card",
    "Hook",
    "HookCall",
    "RememberWarned",
    "Runtime",
    "Warned",
    "answer",
    "check_services",
    "hook",
    "orders",
    "patient_view",
    "prepare",
]
