"""`genshift data check` for the video track: every landmark file parsed, every video decoded.

Errors (the kind names are what `--json` and run.json list): `unreadable` (cannot read or decode), `empty`
(no frame), `ragged` (frames of different lengths), `bad_width` (not 136 values per frame), `non_finite`
(NaN or infinite values), `changed` (bytes differ from the manifest's sha256), `too_short` (fewer frames than
one segment), `no_segment` (long enough for a segment in general, but the profile cuts none: LRNet's
`range(0, T - 30, 30)` for a video of exactly 30 frames; LRNet appended its label anyway, shifting labels
against predictions). Duplicates (same bytes) are found by the caller from the returned sha256.
"""

from __future__ import annotations

from benchmark.imagestore import describe, read_checked
from benchmark.sequences import PROFILES, SequenceError, landmarks_from_bytes, segment_starts


def check_sequence_file(kind: str, root: str, path: str, expected_sha: str, frames: int, segment_length: int,
                        profile: str, backend: str = "pyav") -> tuple[str, list[tuple[str, str, str]]]:
    """(sha256 of the file, [(kind, severity, message), ...]) for one landmark file or video."""
    where = describe(root, path)
    data, sha, found = read_checked(root, path, expected_sha)
    if data is None:
        return sha, found
    if kind == "landmarks":
        try:
            n = landmarks_from_bytes(data, where).shape[0]
        except SequenceError as e:
            return sha, found + [(e.kind, "error", str(e))]
    else:
        from benchmark.video_frames import VideoReadError, count_frames

        try:
            n = count_frames(where, backend)
        except VideoReadError as e:
            return sha, found + [("unreadable", "error", str(e))]
        if n == 0:
            return sha, found + [("empty", "error", f"{where}: no decodable frame ({backend})")]
        return sha, found  # frame-level detectors score any video with a frame
    if n < segment_length:
        found.append(("too_short", "error", f"{where}: {n} frames, fewer than one segment of {segment_length}"))
    elif not segment_starts(n, segment_length, PROFILES[profile].last_segment):
        found.append(("no_segment", "error", f"{where}: {n} frames give no segment under profile {profile} "
                                             f"(range(0, T - {segment_length}, {segment_length}) is empty); LRNet "
                                             "would still count its label. Profile fixed scores it"))
    return sha, found
