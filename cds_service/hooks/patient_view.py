"""`patient-view`: the trials the patient may fit, one card each, quiet once a clinician has answered.

A trial card whose trial a clinician has already answered for this patient (feedback `accepted` or
`overridden`, within `CDS_QUIET_DAYS`) is left out, unless its verdict is better now than on the answered
card (possibly -> likely eligible).
"""

from __future__ import annotations

from collections.abc import Mapping

from cds_service.cards import ELIGIBILITY_EXTENSION
from cds_service.hooks.registry import Card, HookCall, Runtime, hook
from cds_service.verdicts import Verdict

_ID = {"type": "string", "pattern": "^[A-Za-z0-9\\-.]{1,64}$"}
USER_ID = {
    "type": "string",
    "pattern": "^(Practitioner|PractitionerRole|Patient|RelatedPerson)/[A-Za-z0-9\\-.]{1,64}$",
}
CONTEXT = {
    "type": "object",
    "required": ["userId", "patientId"],
    "properties": {"userId": USER_ID, "patientId": _ID, "encounterId": _ID},
}
_RANK = {Verdict.LIKELY.value: 0, Verdict.POSSIBLY.value: 1}


@hook("patient-view", context=CONTEXT)
def patient_view(call: HookCall, runtime: Runtime) -> list[Card]:
    """One card per trial the patient may fit, best verdicts first, without the quiet ones."""
    patient_id = call.request.patient_id
    output = runtime.matcher.match(
        call.data.resources,
        patient_id,
        call.today,
        call.data.notes,
        call.data.unavailable,
        cards_only=True,
    )
    quiet = runtime.quieted(patient_id) if patient_id else {}
    return [card for card in output.cards if not is_quiet(card, quiet)]


def is_quiet(card: Card, quiet: Mapping[str, str]) -> bool:
    """Whether a clinician answered this trial's card and its verdict has not improved since."""
    eligibility = card["extension"][ELIGIBILITY_EXTENSION]
    answered = quiet.get(eligibility["nctId"])
    return answered is not None and _RANK[eligibility["verdict"]] >= _RANK.get(answered, 0)
