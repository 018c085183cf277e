"""Disease knowledge the generic stages do not have: one module per disease, each registering its operators.

Importing this package registers every domain's operators. A trial for another cancer needs no module here
as long as the generic operators can say its criteria (tests/test_other_cancer.py shows one that does).
"""

from cds_service.domains import kidney

__all__ = ["kidney"]
