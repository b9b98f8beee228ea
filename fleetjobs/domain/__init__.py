"""Pure rules, free of I/O: state machines, validation rules the model cannot express, ARNs."""
