"""tests/mesh's flips of the policies (inputs.FLIPS), made through the API server instead of to
the translation's inputs: the flip changes a copy of the overlay as rendered, and what it
changed is applied, what it removed deleted; `undo` puts the overlay's objects back as rendered."""

from __future__ import annotations

import yaml

from controlplane import Client
from inputs import Doc, Flip


def _key(doc: Doc) -> tuple[str, str, str]:
    return doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"]


def changes(rendered: list[Doc], flip: Flip) -> tuple[list[Doc], list[Doc]]:
    """What `flip` changes in `rendered`: (objects to apply, objects to delete)."""
    before = {_key(doc): doc for doc in rendered}
    after = {_key(doc): doc for doc in flip.apply(rendered)}
    changed = [doc for key, doc in after.items() if before.get(key) != doc]
    removed = [doc for key, doc in before.items() if key not in after]
    return changed, removed


def apply(cluster: Client, rendered: list[Doc], flip: Flip) -> None:
    changed, removed = changes(rendered, flip)
    if changed:
        cluster.apply(yaml.safe_dump_all(changed))
    if removed:
        cluster.kubectl("delete", "-f", "-", input=yaml.safe_dump_all(removed))


def undo(cluster: Client, rendered: list[Doc], flip: Flip) -> None:
    """The objects `flip` changed or removed, applied again as rendered."""
    changed, removed = changes(rendered, flip)
    keys = {_key(doc) for doc in changed + removed}
    originals = [doc for doc in rendered if _key(doc) in keys]
    if originals:
        cluster.apply(yaml.safe_dump_all(originals))
