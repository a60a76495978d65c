"""`dockwall run`: keep the kernel true to the policy while the host changes."""
