"""Sigma detection rules: parse, then compile, then match, then alert (STYLE.md practice 11).

model (rule, searches, detection items, condition tree) <- loader + schema + values +
condition (YAML with FILE:LINE errors, the Sigma schemas, modifiers, the condition grammar),
filters and correlation (the other two Sigma document kinds); fieldmap (THE table from
Sigma's Linux taxonomy to Vigil's ECS fields), auditd and ecsview (the other two views of an
event); compiler (atoms, one RE2 set per category, rule functions, trigger sets) -> matcher
(the per-event hot path, Engine); ruleset (what the agent runs, from the config) -> detector
(the agent's stage: matches -> alerts, suppression, correlations), watchpaths (what the kernel
must watch for the file rules); cli (``vigil rules``).
"""
