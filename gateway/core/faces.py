"""The face operations behind /detect, /verify, /identify, /face and /faces.

A stored face is written in an order that never leaves half of it visible: the media first
(content-addressed, harmless if orphaned), then the record as pending, then its vector in every
gallery's shard (all or nothing), and only then is the record made visible. A failure on the
way undoes what was done; a crash leaves a pending record that `facegrid reindex` finishes or
removes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from facegrid import confidence
from facegrid.gateway.core.errors import ApiError, BadParam, NotFound, ServiceUnavailable
from facegrid.gateway.core.galleries import Galleries
from facegrid.gateway.core.indexes import GalleryIndexes, Models
from facegrid.gateway.core.live import EventBus, event_body
from facegrid.gateway.core.model import DEFAULT_GALLERY, BBox, Face
from facegrid.gateway.core.persons import (
    Event,
    HistoryQuery,
    HistoryStore,
    Person,
    PersonPolicy,
    is_friend,
)
from facegrid.gateway.core.ports import (
    Detected,
    Detection,
    Extracted,
    Extraction,
    Extractor,
    FaceIndex,
    FaceStore,
    MediaStore,
    MetaSummary,
    NewFace,
    Quota,
    Unlimited,
    Wanted,
)

log = logging.getLogger(__name__)

MAX_PHOTO_BYTES = 10 * 1024 * 1024
PAGE_SIZE = 100
GALLERY_DELETE_BATCH = 500

_MAGIC = (
    (b"\xff\xd8\xff", "jpg", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png", "image/png"),
)


class PhotoTooLarge(BadParam):
    status = 413


class UnsupportedPhoto(BadParam):
    status = 415


class TooManyFaces(ApiError):
    """mf_selector=reject met several faces; the body lists them, as the seed's does."""

    status = 400
    code = "BAD_PARAM"

    def __init__(self, boxes: Sequence[BBox]) -> None:
        super().__init__(f"Too many faces: {len(boxes)}", param="mf_selector", value="reject")
        self.boxes = list(boxes)

    def body(self) -> dict[str, object]:
        return {
            "code": 400,
            "reason": self.reason,
            "faces": [b.as_dict() for b in self.boxes],
        }


@dataclass(frozen=True)
class Photo:
    data: bytes
    # The URL the client gave, or "" for an upload.
    url: str = ""
    param: str = "photo"


def photo_format(photo: Photo) -> tuple[str, str]:
    """(file extension, content type) of a JPEG, PNG or WebP photo; 413/415 otherwise."""
    if len(photo.data) > MAX_PHOTO_BYTES:
        raise PhotoTooLarge(
            f"the photo is {len(photo.data)} bytes; the limit is {MAX_PHOTO_BYTES}",
            param=photo.param,
            value=photo.url or f"<{len(photo.data)} bytes>",
        )
    for magic, ext, content_type in _MAGIC:
        if photo.data.startswith(magic):
            return ext, content_type
    if photo.data[:4] == b"RIFF" and photo.data[8:12] == b"WEBP":
        return "webp", "image/webp"
    raise UnsupportedPhoto(
        "the photo is not a JPEG, PNG or WebP image",
        param=photo.param,
        value=photo.url or f"<{len(photo.data)} bytes>",
    )


def select(detections: list[Detection], mf_selector: str) -> list[Detection]:
    if mf_selector == "reject" and len(detections) > 1:
        raise TooManyFaces([d.bbox for d in detections])
    if mf_selector == "biggest" and detections:
        return [max(detections, key=lambda d: d.bbox.area)]
    return detections


def distance(a: bytes, b: bytes) -> float:
    return float(np.linalg.norm(np.frombuffer(a, "<f4") - np.frombuffer(b, "<f4")))


@dataclass(frozen=True)
class Match:
    confidence: float
    face: Face


@dataclass(frozen=True)
class Identified:
    # One entry per face looked up: its box and its matches, best first.
    results: list[tuple[BBox, list[Match]]]
    live: int
    total: int


@dataclass(frozen=True)
class Verified:
    pairs: list[tuple[BBox, BBox, float]]
    threshold: float | None

    def verified(self, confidence_: float) -> bool:
        return self.threshold is not None and confidence_ >= self.threshold

    @property
    def all_verified(self) -> bool:
        """True if every face of the first photo has a match on the second."""
        if self.threshold is None or not self.pairs:
            return False
        firsts = {p[0] for p in self.pairs}
        return all(any(self.verified(c) for b1, _, c in self.pairs if b1 == f) for f in firsts)


class Faces:
    def __init__(
        self,
        extractor: Extractor,
        index: FaceIndex,
        store: FaceStore,
        media: MediaStore,
        galleries: Galleries,
        history: HistoryStore,
        policy: PersonPolicy | None = None,
        *,
        bus: EventBus | None = None,
        public_url: str = "",
        quota: Quota | None = None,
        models: Models | None = None,
        strict_search: bool = False,
    ) -> None:
        """bus: where history events are published (None: not published); public_url: the
        gateway's address as clients see it, for absolute media URLs in published events;
        quota: the licence's faces limit (None: unlimited); models: the extractors of other
        models and the galleries' index plans (None: one model, every gallery its own index);
        strict_search: whether an identify that does not say `strict` fails when a shard is
        out of service (else it answers from the live ones)."""
        self._extractor = extractor
        self._models = models or Models(extractor)
        self._index = index
        self._store = store
        self._media = media
        self._galleries = galleries
        self._history = history
        self.policy = policy or PersonPolicy()
        self._bus = bus
        self.public_url = public_url.rstrip("/")
        self._quota = quota or Unlimited()
        self.strict_search = strict_search

    # -- finding faces on photos ----------------------------------------------------------------

    async def detect(self, photo: Photo, bboxes: list[BBox] | None = None) -> Detected:
        """Faces on the photo, or inside each given box (the box itself when none is found)."""
        photo_format(photo)
        if not bboxes:
            return await self._extractor.detect(photo.data)
        found: list[Detection] = []
        orientation = 1
        for box in bboxes:
            inside = await self._extractor.detect(photo.data, roi=box)
            found.extend(inside.faces or [Detection(box, 1.0, 0.0)])
            orientation = inside.orientation
        return Detected(found, orientation)

    async def _faces_on(
        self,
        photo: Photo,
        bboxes: list[BBox] | None,
        mf_selector: str,
        wanted: Wanted,
        *,
        trust_boxes: bool = False,
        extractor: Extractor | None = None,
    ) -> Extracted:
        """extractor: the one whose model the vectors must be of (the default one if None)."""
        if bboxes and trust_boxes:
            photo_format(photo)
            chosen = [Detection(b, 1.0, 0.0) for b in bboxes]
        elif not bboxes and mf_selector == "biggest":
            photo_format(photo)
            return await (extractor or self._extractor).extract_biggest(photo.data, wanted)
        else:
            chosen = select((await self.detect(photo, bboxes)).faces, mf_selector)
        if not chosen:
            return Extracted("", [])
        return await (extractor or self._extractor).extract(photo.data, chosen, wanted)

    async def analyse(
        self, photo: Photo, wanted: Wanted
    ) -> tuple[list[Extraction] | list[Detection], int]:
        """/detect: boxes, with gender, age and emotions when asked (v1), and the photo's EXIF
        orientation."""
        detected = await self.detect(photo)
        if not detected.faces or not wanted.attributes:
            return detected.faces, detected.orientation
        extracted = await self._extractor.extract(photo.data, detected.faces, wanted)
        return extracted.faces, detected.orientation

    # -- verify and identify --------------------------------------------------------------------

    async def verify(
        self,
        photo1: Photo,
        photo2: Photo,
        bbox1: list[BBox] | None,
        bbox2: list[BBox] | None,
        threshold: float | None,
        mf_selector: str,
    ) -> Verified:
        first, second = await asyncio.gather(
            self._faces_on(photo1, bbox1, mf_selector, Wanted(), trust_boxes=True),
            self._faces_on(photo2, bbox2, mf_selector, Wanted(), trust_boxes=True),
        )
        pairs = [
            (a.bbox, b.bbox, confidence.confidence_of(distance(a.facen, b.facen)))
            for a in first.faces
            for b in second.faces
        ]
        return Verified(pairs, threshold)

    async def identify(
        self,
        photo: Photo,
        bboxes: list[BBox] | None,
        *,
        gallery: str = DEFAULT_GALLERY,
        threshold: float,
        n: int,
        strict: bool | None,
        mf_selector: str,
    ) -> Identified:
        """strict: None for the configured default (strict_search)."""
        if strict is None:
            strict = self.strict_search
        # The query vectors are of the model the gallery's active index holds.
        active = (await self._models.plan(gallery)).active
        extractor = await self._models.require(active.model, gallery)
        extracted = await self._faces_on(photo, bboxes, mf_selector, Wanted(), extractor=extractor)
        max_distance = confidence.distance_for(threshold)
        limit = 0.0 if max_distance == float("inf") else max_distance
        results: list[tuple[BBox, list[Match]]] = []
        live, total = [], []
        for face in extracted.faces:
            outcome = await self._index.search(active.index, face.facen, n, limit, strict=strict)
            live.append(outcome.live)
            total.append(outcome.total)
            records = await self._store.get_many([i for i, _ in outcome.hits])
            matches = [
                Match(confidence.confidence_of(d), records[i])
                for i, d in outcome.hits
                if i in records
            ]
            results.append((face.bbox, matches))
        return Identified(results, min(live, default=0), max(total, default=0))

    # -- storing faces --------------------------------------------------------------------------

    async def add(
        self,
        photo: Photo,
        *,
        meta: str,
        galleries: list[str],
        bboxes: list[BBox] | None,
        mf_selector: str,
        wanted: Wanted,
        cam_id: str | None = None,
        chip: bytes | None = None,
        timestamp: dt.datetime | None = None,
        detector_params: dict[str, object] | None = None,
    ) -> list[Face]:
        """/face POST. `chip` is an aligned face sent with the photo (the video worker's
        `face0`): its vector is taken from it, without detecting again."""
        ext, content_type = photo_format(photo)
        wanted = Wanted(wanted.gender, wanted.age, wanted.emotions, normalized=True)
        if chip is not None:
            extracted = await self._extractor.extract_chip(chip, wanted)
            box = bboxes[0] if bboxes else BBox(0, 0, 1, 1)
            extracted = Extracted(extracted.model, [_with_box(f, box) for f in extracted.faces[:1]])
        else:
            extracted = await self._faces_on(photo, bboxes, mf_selector, wanted)
        if not extracted.faces:
            raise BadParam("no face found on the photo", param=photo.param, value=photo.url)
        await self._quota.reserve(len(extracted.faces))  # before anything is written

        photo_hash = hashlib.md5(photo.data, usedforsecurity=False).hexdigest()
        stored_photo = await self._media.put(f"{photo_hash}.{ext}", photo.data, content_type)
        ids = await self._store.next_ids(len(extracted.faces))
        when = timestamp or dt.datetime.now(dt.UTC)
        persons: list[int | None] = [None] * len(ids)
        metas = [meta] * len(ids)
        hidden: tuple[str, ...] = ()
        if self.policy.identify:
            hidden = (self.policy.gallery_for(cam_id),)
            await self._galleries.ensure_internal(hidden[0])
        plans = [await self._models.plan(g) for g in (*galleries, *hidden)]
        vectors = [await self._vectors(f, extracted.model, plans) for f in extracted.faces]
        if hidden:
            active = plans[-1].active
            found = [await self._person_for(active.index, v[active.model], meta) for v in vectors]
            persons = [person_id for person_id, _ in found]
            # A face without a meta takes its person's, as the seed's reference face gives it.
            metas = [meta or inherited for _, inherited in found]
        new_faces = []
        for face_id, face, person_id, face_meta, facens in zip(
            ids, extracted.faces, persons, metas, vectors, strict=True
        ):
            normalized = ""
            if face.normalized:
                normalized = await self._media.put(
                    f"{face_id}_norm.png", face.normalized, "image/png"
                )
            record = Face(
                id=face_id,
                bbox=face.bbox,
                meta=face_meta,
                galleries=tuple(galleries),
                photo=photo.url or stored_photo,
                photo_hash=photo_hash,
                timestamp=when,
                thumbnail=normalized,
                normalized=normalized,
                cam_id=cam_id,
                attributes=face.attributes,
                model=extracted.model,
                person_id=person_id,
                hidden_galleries=hidden,
                # Without a camera there is no history to judge by: never a friend yet.
                friend=False if self.policy.identify and cam_id is None else None,
                extra={
                    "stored_photo": stored_photo,
                    "quality": face.quality,
                    **({"detector_params": detector_params} if detector_params else {}),
                },
            )
            others = {m: v for m, v in facens.items() if m != extracted.model}
            new_faces.append(NewFace(record, face.facen, vectors=others))
        await self._store.insert_pending(new_faces)
        added: list[tuple[int, list[str]]] = []
        try:
            for new, facens in zip(new_faces, vectors, strict=True):
                for model, indexes in _indexes_by_model(plans, facens).items():
                    added.append((new.face.id, indexes))
                    await self._index.add(new.face.id, facens[model], indexes)
        except BaseException:
            await asyncio.gather(
                *(self._index.delete(face_id, indexes) for face_id, indexes in added),
                return_exceptions=True,
            )
            await self._store.remove(ids)
            raise
        await self._models.record(plans)
        await self._store.activate(ids)
        if cam_id is None:
            return [n.face for n in new_faces]
        return [await self._record_event(n.face) for n in new_faces]

    async def _vectors(
        self, face: Extraction, model: str, plans: Sequence[GalleryIndexes]
    ) -> dict[str, bytes]:
        """The face's vector of each model its galleries' indexes hold, by model. Another
        model's vector comes from the aligned face. A shadow index whose model no extractor here
        serves is left out (the migration catches up on it); a gallery's active one is not."""
        vectors = {model: face.facen}
        for plan in plans:
            for written in plan.written:
                if written.model in vectors:
                    continue
                if written is plan.active:
                    extractor = await self._models.require(written.model, plan.gallery)
                else:
                    found = await self._models.extractor(written.model)
                    if found is None:
                        continue
                    extractor = found
                other = await extractor.extract_chip(face.normalized, Wanted())
                if not other.faces or other.model != written.model:
                    raise ServiceUnavailable(
                        f"the extractor of model {written.model} made no vector of the face"
                    )
                vectors[written.model] = other.faces[0].facen
        return vectors

    async def _person_for(self, index: str, facen: bytes, meta: str) -> tuple[int, str]:
        """The person of the most similar face seen before (the reference face), and that
        face's meta; or a new person."""
        outcome = await self._index.search(index, facen, 1, self.policy.max_distance)
        if outcome.hits:
            reference = await self._store.get_many([outcome.hits[0][0]])
            face = reference.get(outcome.hits[0][0])
            if face is not None and face.person_id is not None:
                return face.person_id, face.meta
        person = Person(await self._history.next_person_id(), meta, dt.datetime.now(dt.UTC))
        await self._history.add_person(person)
        return person.id, meta

    async def _record_event(self, face: Face) -> Face:
        """Write the face's history event; returns the face with its friend verdict."""
        assert face.cam_id is not None
        friend = False
        event = Event(
            id=await self._history.next_event_id(),
            face_id=face.id,
            cam_id=face.cam_id,
            timestamp=face.timestamp,
            bbox=face.bbox,
            meta=face.meta,
            photo=face.photo,
            photo_hash=face.photo_hash,
            screenshot=face.thumbnail,
            person_id=face.person_id,
            friend=False,
        )
        if face.person_id is not None and self.policy.identify:
            since = face.timestamp - self.policy.friend_interval
            seen = await self._history.days_seen(face.person_id, face.cam_id, since, face.timestamp)
            # Today counts whether or not an earlier event today was recorded already.
            today_new = not await self._history.seen_on(face.person_id, face.cam_id, face.timestamp)
            friend = is_friend(seen + today_new, self.policy)
            event = dataclasses.replace(event, friend=friend)
        await self._history.add_event(event)
        if self._bus is not None:
            try:
                await self._bus.publish(event_body(event, self.public_url))
            except ApiError as e:
                # The face and its event are stored; a live view misses this one.
                log.warning("event %d not published: %s", event.id, e.reason)
        if not self.policy.identify:
            return face
        await self._store.set_friend(face.id, friend)
        return face.with_changes(friend=friend)

    # -- persons and history --------------------------------------------------------------------

    async def person(self, person_id: int) -> tuple[Person, list[Face]]:
        person = await self._history.person(person_id)
        if person is None:
            raise NotFound(f"person {person_id} does not exist", param="id", value=person_id)
        return person, await self._store.by_person(person_id)

    async def persons(self, max_id: int | None, limit: int) -> list[Person]:
        return await self._history.persons(max_id, limit)

    async def history(self, query: HistoryQuery) -> list[Event]:
        return await self._history.events(query)

    # -- reading and changing stored faces ------------------------------------------------------

    async def get(self, face_id: int) -> Face:
        face = await self._store.get(face_id)
        if face is None:
            raise NotFound(f"face {face_id} does not exist", param="id", value=face_id)
        return face

    async def update(
        self,
        face_id: int,
        *,
        meta: str | None,
        person_id: int | None,
        galleries: dict[str, list[str]] | None,
    ) -> Face:
        face = await self.get(face_id)
        new_galleries: list[str] | None = None
        if galleries is not None:
            new_galleries = _gallery_change(list(face.galleries), galleries)
            added = [g for g in new_galleries if g not in face.galleries]
            removed = [g for g in face.galleries if g not in new_galleries]
            if added:
                await self._add_to(face_id, added)
            if removed:
                await self._index.delete(face_id, await self._indexes_of(removed))
        hidden = None
        if person_id is not None:
            hidden = await self._join_person(face, person_id)
        updated = await self._store.update(
            face_id,
            meta=meta,
            person_id=person_id,
            galleries=new_galleries,
            hidden_galleries=hidden,
        )
        if updated is None:
            raise NotFound(f"face {face_id} does not exist", param="id", value=face_id)
        return updated

    async def _join_person(self, face: Face, person_id: int) -> tuple[str, ...] | None:
        """PUT person_id, which the seed documents as the way to bring faces stored before
        into person identification: the person exists (its id kept from persons made later),
        the face's camera events move to it, and with identification on the face's vector
        joins its camera's persons index, where later faces find it. Returns the face's new
        hidden galleries, if they change."""
        now = dt.datetime.now(dt.UTC)
        await self._history.claim_person(Person(person_id, face.meta, now))
        await self._history.move_events(face.id, person_id)
        persons = self.policy.gallery_for(face.cam_id)
        if not self.policy.identify or persons in face.hidden_galleries:
            return None
        await self._galleries.ensure_internal(persons)
        await self._add_to(face.id, [persons])
        return (*face.hidden_galleries, persons)

    async def _add_to(self, face_id: int, galleries: Sequence[str]) -> None:
        """Index a stored face in more galleries, with the stored vectors of their models."""
        plans = [await self._models.plan(g) for g in galleries]
        facens: dict[str, bytes] = {}
        for plan in plans:
            for written in plan.written:
                if written.model in facens:
                    continue
                vector = await self._store.vector(face_id, written.model)
                if vector is not None:
                    facens[written.model] = vector
                elif written is plan.active:
                    raise ServiceUnavailable(
                        f"face {face_id} has no vector of model {written.model}, which gallery "
                        f"{plan.gallery!r} is served by: run `facegrid migrate` for the gallery"
                    )
        done: list[list[str]] = []
        try:
            for model, indexes in _indexes_by_model(plans, facens).items():
                done.append(indexes)
                await self._index.add(face_id, facens[model], indexes)
        except BaseException:
            await asyncio.gather(
                *(self._index.delete(face_id, indexes) for indexes in done),
                return_exceptions=True,
            )
            raise
        await self._models.record(plans)

    async def _indexes_of(self, galleries: Sequence[str]) -> list[str]:
        """Every index the galleries' faces are written to."""
        plans = [await self._models.plan(g) for g in galleries]
        return list(dict.fromkeys(w.index for p in plans for w in p.written))

    async def delete(self, face_id: int) -> None:
        face = await self.get(face_id)
        await self._index.delete(face_id, await self._indexes_of(face.index_galleries))
        await self._store.remove([face_id])

    async def page(
        self, gallery: str | None, max_id: int | None, limit: int = PAGE_SIZE
    ) -> list[Face]:
        return await self._store.page(gallery=gallery, max_id=max_id, limit=limit)

    async def previous_max_id(self, gallery: str | None, first_id: int, limit: int) -> int | None:
        """The max_id whose page comes before the page starting at first_id; None at the top."""
        newer = await self._store.ids_above(gallery=gallery, min_id=first_id, limit=limit)
        return newer[-1] + 1 if newer else None

    async def by_meta(self, meta: str, gallery: str | None = None) -> list[Face]:
        return await self._store.by_meta(meta, gallery)

    async def metas(
        self, gallery: str | None, max_id: int, limit: int = PAGE_SIZE
    ) -> list[MetaSummary]:
        """A page of metas, newest first: the metas whose first face is below max_id."""
        return await self._store.metas(gallery, max_id, limit)

    async def previous_meta_max_id(
        self, gallery: str | None, first_id: int, limit: int
    ) -> int | None:
        """The max_id of the metas page before the one starting at first_id; None at the top."""
        newer = await self._store.meta_ids_above(gallery=gallery, min_id=first_id, limit=limit)
        return newer[-1] + 1 if newer else None

    async def delete_gallery_faces(self, gallery: str) -> int:
        """Before a gallery is deleted: the seed's DELETE /galleries/<g> deletes "the gallery
        and all faces in it", so its faces go from every gallery they are in. In batches, each
        face's vectors before its record: a delete cut short leaves whole faces, and the
        repeated request finishes it. Returns how many faces went."""
        ids = await self._store.ids_in_gallery(gallery)
        for start in range(0, len(ids), GALLERY_DELETE_BATCH):
            batch = ids[start : start + GALLERY_DELETE_BATCH]
            # By the galleries each face is also in; the gallery's own index goes whole with it.
            by_others: dict[tuple[str, ...], list[int]] = {}
            for face_id, face in (await self._store.get_many(batch)).items():
                others = tuple(g for g in face.index_galleries if g != gallery)
                by_others.setdefault(others, []).append(face_id)
            for others, face_ids in by_others.items():
                await self._index.delete_many(face_ids, await self._indexes_of(others))
            await self._store.remove(batch)
        return len(ids)

    async def forget_gallery(self, gallery: str) -> None:
        """After a gallery is deleted: its name leaves every face's list (faces added while it
        was being deleted), and the indexes a migration made for it go too."""
        for index in await self._models.forget(gallery):
            await self._galleries.delete_internal(index)
        await self._store.drop_gallery(gallery)


def _indexes_by_model(
    plans: Sequence[GalleryIndexes], facens: dict[str, bytes]
) -> dict[str, list[str]]:
    """The indexes to write each vector to: every written index of a model there is a vector
    of (plans ask for at most one vector per model)."""
    by_model: dict[str, list[str]] = {}
    for plan in plans:
        for written in plan.written:
            if written.model in facens and written.index not in by_model.get(written.model, []):
                by_model.setdefault(written.model, []).append(written.index)
    return by_model


def _with_box(face: Extraction, box: BBox) -> Extraction:
    return Extraction(box, face.facen, face.quality, face.attributes, face.normalized)


def _gallery_change(current: list[str], change: dict[str, list[str]]) -> list[str]:
    """Apply {"add": [...]}, {"del": [...]} or {"set": [...]}; `default` always stays."""
    if len(change) != 1 or next(iter(change)) not in ("add", "del", "set"):
        raise BadParam(
            'galleries must be one of {"add": [...]}, {"del": [...]}, {"set": [...]}',
            param="galleries",
            value=change,
        )
    op, names = next(iter(change.items()))
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise BadParam("galleries must list gallery names", param="galleries", value=change)
    if op == "del" and DEFAULT_GALLERY in names:
        raise BadParam("a face cannot leave the default gallery", param="galleries", value=change)
    if op == "add":
        return current + [n for n in dict.fromkeys(names) if n not in current]
    if op == "del":
        return [g for g in current if g not in names]
    return [DEFAULT_GALLERY] + [n for n in dict.fromkeys(names) if n != DEFAULT_GALLERY]
