"""The plan's working status (``core.plan.state.Draft``): typed fields, and only assigned fields written."""

from __future__ import annotations

import pydantic
import pytest

from modelrollout import api
from modelrollout.core.plan.state import Draft


def test_draft_writes_only_the_fields_assigned() -> None:
    old = api.ModelRolloutStatus(message="was", current_weight=10, stable_revision="a")
    draft = Draft.of(old)
    assert draft.assigned() == {}
    draft.current_weight = 25
    draft.message = draft.message + " and is"
    assert draft.assigned() == {"message": "was and is", "current_weight": 25}
    written = old.model_copy(update=draft.assigned())
    assert (written.stable_revision, written.current_weight, written.message) == ("a", 25, "was and is")
    assert old.current_weight == 10  # the status read is not changed


def test_draft_refuses_a_field_the_status_does_not_have() -> None:
    draft = Draft.of(api.ModelRolloutStatus())
    with pytest.raises(pydantic.ValidationError):
        setattr(draft, "curent_weight", 1)  # noqa: B010 (mypy reports it when written as an attribute)
    with pytest.raises(pydantic.ValidationError):
        draft.current_weight = "many"  # type: ignore[assignment]
    assert draft.assigned() == {}
