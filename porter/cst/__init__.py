"""The neutral libcst layer: matching (match), finding (find) and node helpers (nodes).

Profile, edits and verify all read code through these; none of them imports another room
to do so.
"""
