ensure_node_tools() { return 0; }  # filled in by the KQL checker work
