"""The department side: a unit (township or department) is a NATS client of its own cases."""
