"""What every process shares at run time (I/O): NATS connections and bootstrap, the
embedded nats-server, TLS generation, password sealing, HTTP probes, task shutdown."""
