"""File integrity monitoring: baseline store, scanner, realtime reconciliation, content diffs.

Owns turning file events and disk walks into FIM events (added/modified/deleted/renamed/
attributes-changed) against a SQLite baseline. Does not own the kernel events (vigil.events) nor
how FIM events are rendered (vigil.outputs.ecs_fim).
"""
