"""The fleet: what a fleet's workers and its clients (the CLI, the dashboard, the operator) share through the broker.

- ``records``: a worker's heartbeat record (``WorkerRecord``): who it is, what it consumes, what each child runs.
- ``protocol``: control requests and replies (``ControlRequest``, ``ControlReply``) and the command names, Celery's
  spellings included.
- ``revocations``: a revoked task id as stored (``Revocation``), honoured by workers started later.
- ``events``: task and worker events (``FleetEvent``) as they go to the app's bounded event stream.
- ``control``: the client, ``app.control`` (Celery's ``app.control``: ``inspect()``, ``revoke``, ``rate_limit``...).

Where it is stored, each broker in its own way: ``taskfleet.brokers.fleet_store``. Everything here is plain data
with a JSON codec; nothing imports a broker client.
"""
