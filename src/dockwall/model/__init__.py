"""What dockwall reasons about, as typed values: the policy (policy, read from YAML by
yamlsource), the Docker host (hoststate), the backend-neutral ruleset the compiler makes of
both (ruleset), the packets it is asked about (packets), and checked values (values)."""
