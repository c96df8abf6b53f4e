"""Sigma detection rules: parse, then compile, then match (STYLE.md practice 11).

model (rule, searches, detection items, condition tree) <- loader + schema + values +
condition (YAML with FILE:LINE errors, the Sigma schema, modifiers, the condition grammar);
fieldmap (THE table from Sigma's Linux taxonomy to Vigil's ECS fields, ECS event -> flat
record); compiler (atoms, one RE2 set per category, rule functions, trigger sets) -> matcher
(the per-event hot path, Engine); cli (``vigil rules``). Not wired into ``vigil run`` yet.
"""
