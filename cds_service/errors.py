"""Every error the service raises on purpose, in one tree (the web layer maps it to HTTP in one handler).

Each class has a short `code` (the `error` of a JSON error body, or the reason logged for a rejected token);
the message says what was wrong, for a human, and never quotes a token or a patient's value::

    CdsError
    ├── ConfigError                   the service cannot start with this setting or file (exit, one line)
    │   ├── CatalogError              the trial catalog: file and path of every problem
    │   ├── RuleError                 a catalog rule that cannot be compiled
    │   │   ├── UnknownOperatorError  a leaf names no registered operator
    │   │   └── RuleParameterError    a node or parameter is missing, unknown or of the wrong type
    │   ├── TrustConfigError          the trusted-issuers file
    │   └── GalleryError              the sandbox's example-patient manifest
    ├── InputError                    what a client or a user gave cannot be used
    │   ├── RequestError              a request body (400)
    │   │   ├── MalformedJson         not JSON, or nested too deep
    │   │   ├── InvalidBody           JSON not of the CDS Hooks 2.0 shape (names the JSON path)
    │   │   ├── WrongHook             a hook this service does not answer
    │   │   └── PatientMismatch       the prefetched Patient is not context.patientId
    │   ├── UnknownService            no CDS service with this id (404)
    │   ├── TooManyResources          more FHIR resources than allowed (413)
    │   ├── FhirServerError           a fhirServer the caller may not send its token to
    │   │   ├── FhirServerNotAllowed  not registered for the calling issuer (403)
    │   │   └── FhirServerNotHttps    plain http outside sandbox mode (400)
    │   ├── BundleFileError           a file given to the command line is not FHIR for one patient
    │   ├── ExportError               a folder given to `prescreen` is not a readable Bulk Data export
    │   └── CtgovImportError          a registry record that cannot become a draft mapping
    ├── PreconditionFailed            required patient data could be neither prefetched nor fetched (412)
    ├── StorageUnavailable            the database cannot be reached: nothing was stored, retry (503)
    ├── AuthError                     the caller is not let in (bare 401); `code` is the logged reason
    │   └── KeyLookupError            no usable key for the token's `kid`
    └── FetchError                    one FHIR read failed (never leaves fhir_fetch: it becomes a card note)
        ├── DeadlineExceeded          the call's deadline passed before the read could start
        └── NotFhir                   the answer is JSON but not a FHIR resource, or an OperationOutcome

Configuration and input errors are also `ValueError`s, as the standard library's own bad-value errors are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class CdsError(Exception):
    """An error of the service; `code` names it in short."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(CdsError, ValueError):
    """A setting, file or catalog the service cannot start with."""

    code = "config"


class CatalogError(ConfigError):
    """The catalog folder holds a file that is unreadable, breaks its schema, or fails the semantic check.

    `problems` are `catalog.Problem`s (file, path inside it, message); the message lists them all, the first
    one on the first line.
    """

    code = "catalog"

    def __init__(self, problems: Sequence[Any]) -> None:
        self.problems = tuple(problems)
        self.file: str = problems[0].file
        self.path: str = problems[0].path
        lines = [str(p) for p in problems]
        if len(lines) > 1:
            lines.insert(1, f"({len(lines)} problems in the catalog)")
        super().__init__("\n".join(lines))


class RuleError(ConfigError):
    """A rule cannot be compiled; the message names the path inside the rule."""

    code = "rule"


class UnknownOperatorError(RuleError):
    """A leaf names an operator that is not registered."""


class RuleParameterError(RuleError):
    """A node or leaf parameter is missing, unknown, or of the wrong type."""


class TrustConfigError(ConfigError):
    """The trusted issuers file is missing, unreadable or invalid (the service must not start)."""

    code = "trusted-issuers"


class GalleryError(ConfigError):
    """The example-patient manifest is missing or malformed."""

    code = "gallery"


class InputError(CdsError, ValueError):
    """What a client or a user gave cannot be used."""

    code = "invalid-input"


class RequestError(InputError):
    """A request body the service cannot use."""

    code = "invalid-request"


class MalformedJson(RequestError):
    code = "malformed-json"


class InvalidBody(RequestError):
    code = "invalid-request"


class WrongHook(RequestError):
    code = "wrong-hook"


class PatientMismatch(RequestError):
    code = "patient-mismatch"


class UnknownService(InputError):
    """No service with this id is listed by discovery."""

    code = "unknown-service"


class TooManyResources(InputError):
    code = "too-many-resources"


class FhirServerError(InputError):
    """The request names a FHIR server it may not send its token to."""

    code = "fhir-server-not-allowed"


class FhirServerNotAllowed(FhirServerError):
    code = "fhir-server-not-allowed"


class FhirServerNotHttps(FhirServerError):
    code = "fhir-server-not-https"


class BundleFileError(InputError):
    """The file cannot be read as FHIR data for one patient."""

    code = "bundle-file"


class ExportError(InputError):
    """A FHIR Bulk Data export that cannot be screened: no such folder, no NDJSON, an unreadable manifest."""

    code = "export"


class CtgovImportError(InputError):
    """The registry record lacks what a mapping needs, or its criteria cannot be split."""

    code = "ctgov-import"


class PreconditionFailed(CdsError):
    """Required patient data can be neither prefetched nor fetched."""

    code = "precondition-failed"


class StorageUnavailable(CdsError):
    """The database cannot be reached (connection refused or lost): the write did not happen."""

    code = "storage-unavailable"


class AuthError(CdsError):
    """The caller is not authenticated; `code` (the reason) is logged, never sent."""

    def __init__(self, code: str, iss: str | None = None, jti: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.iss = iss
        self.jti = jti

    @property
    def reason(self) -> str:
        return self.code


class KeyLookupError(AuthError):
    """No usable key for a token's `kid` (the token is rejected)."""


class FetchError(CdsError):
    """A read could not produce FHIR data; the message is the problem shown in the card's note."""

    code = "fetch"


class DeadlineExceeded(FetchError):
    pass


class NotFhir(FetchError):
    pass
