"""Pure steps from the model to answers: the compiler (policy + host -> ruleset), the one
evaluator (decide: what the ruleset does with a packet), and what is built on them: who may
reach what (exposure), why a connection is allowed or dropped (explain), what a change of
policy or host changes (policydiff)."""
