"""``fogline cluster``: deal a stream to several nodes, read their status, feed a test stream."""

from __future__ import annotations

import json
import signal
import threading
import time
from dataclasses import asdict
from typing import Any

import typer
from rich.table import Table

from fogline.cli._app import app, console, console_err
from fogline.errors import ConfigError

cluster = typer.Typer(
    help="Edge clusters: several `fogline run` nodes that share one stream.",
    no_args_is_help=True,
)
app.add_typer(cluster, name="cluster")

_BROKER = typer.Option(..., "--broker", help="The MQTT broker, e.g. mqtt://127.0.0.1:1883.")
_GROUP = typer.Option(..., "--group", help="The cluster group (the nodes' `share:`).")


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


@cluster.command("dispatch")
def dispatch(
    broker: str = _BROKER,
    group: str = _GROUP,
    topic: str = typer.Option(..., "--topic", help="The topic the producer publishes items to."),
    window: int = typer.Option(2, "--window", min=1, help="Credits of a node that names none."),
    results: str | None = typer.Option(
        None, "--results", help="Publish every node's result to this topic."
    ),
    ordered: bool = typer.Option(
        False, "--ordered", help="With --results: in the producer's order (reorder window)."
    ),
    reorder_window: int = typer.Option(
        256, "--reorder-window", min=1, help="Items a result may wait for an earlier one."
    ),
    item_timeout: float = typer.Option(
        30.0, "--item-timeout", min=0.1, help="Seconds before a node's item goes to another."
    ),
) -> None:
    """Deal the items on --topic to the group's nodes by credit until Ctrl-C or SIGTERM."""
    from fogline.cluster import Dispatcher, read_status

    dispatcher = Dispatcher(
        broker,
        group,
        topic,
        window=window,
        results=results,
        ordered=ordered,
        reorder_window=reorder_window,
        item_timeout=item_timeout,
    )
    # One dispatcher per group: a second one would take over the first's session, back and forth.
    running = read_status(broker, group).dispatcher
    if running is not None and running.state == "running" and time.time() - running.at < 5:
        raise ConfigError(
            f"a dispatcher already runs for group {group} on {broker} "
            f"(its stats are {max(0.0, time.time() - running.at):.0f} s old); one per group"
        )
    stop = _stop_on_signals()
    thread = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True)
    thread.start()
    if dispatcher.wait_ready(10.0):
        console_err.print(f"dispatching {topic} to group {group} on {broker} (Ctrl-C stops)")
    while not stop.wait(0.2):
        if dispatcher.error is not None:
            stop.set()
    thread.join()
    if dispatcher.error is not None:
        raise ConfigError(dispatcher.error)
    console_err.print(_dispatcher_line(asdict(dispatcher.stats)), soft_wrap=True)


def _dispatcher_line(d: dict[str, Any]) -> str:
    return (
        f"dispatcher {d['state']}: {d['topic']}, queued {d['queued']}, dispatched "
        f"{d['dispatched']}, completed {d['completed']}, redispatched {d['redispatched']}, "
        f"duplicates {d['duplicates']}, late {d['late']}"
        + (
            f"; repeated {d['repeated']}: ids done already, not processed again (a producer "
            "that reuses ids; feed again with another --id-prefix)"
            if d.get("repeated")
            else ""
        )
    )


@cluster.command("status")
def status(
    broker: str = _BROKER,
    group: str = _GROUP,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    timeout: float = typer.Option(5.0, "--timeout", min=0.1, help="Seconds to reach the broker."),
) -> None:
    """The group's nodes (state, took, finished, in flight, lag, device) and its dispatcher."""
    from fogline.cluster import read_status

    try:
        found = read_status(broker, group, timeout=timeout)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if as_json:
        console.print_json(json.dumps(found.to_dict()))
        return
    if not found.nodes:
        console.print(f"no node of group {group} has announced itself on {broker}")
    else:
        now = time.time()
        seen_by = found.dispatcher.nodes if found.dispatcher is not None else {}
        table = Table(title=f"cluster {group}")
        columns = ["node", "state", "took", "finished", "in flight", "lag ms", "seen", "device"]
        if seen_by:  # what the dispatcher counted: a killed node's last will cannot say
            columns[4:4] = ["confirmed", "re-dispatched"]
        for column in columns:
            table.add_column(column, justify="left" if column in ("node", "state") else "right")
        for node in found.nodes:
            style = {"online": "green", "offline": "red", "draining": "yellow"}[node.state]
            row = [
                node.node,
                f"[{style}]{node.state}[/]",
                str(node.took),
                str(node.finished),
                str(node.in_flight),
                "-" if node.lag_ms is None else f"{node.lag_ms:.1f}",
                f"{max(0.0, now - node.at):.0f} s ago",
                node.device or "-",
            ]
            if seen_by:
                counted = seen_by.get(node.node, {})
                row[4:4] = [str(counted.get(k, "-")) for k in ("completed", "redispatched")]
            table.add_row(*row)
        console.print(table)
    if found.dispatcher is None:
        console.print("no dispatcher has run for this group")
    else:
        console.print(_dispatcher_line(asdict(found.dispatcher)), highlight=False, soft_wrap=True)


@cluster.command("forget")
def forget_nodes(
    broker: str = _BROKER,
    group: str = _GROUP,
    nodes: list[str] = typer.Argument(None, help="Node names (default: every offline node)."),
) -> None:
    """Clear the retained presence of nodes that left for good, so status stops listing them."""
    from fogline.cluster import forget

    try:
        gone = forget(broker, group, nodes or ())
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    console.print(f"forgot {len(gone)} node(s) of group {group}: {', '.join(gone) or '-'}")


@cluster.command("feed")
def feed(
    broker: str = typer.Option(..., "--broker", help="The MQTT broker."),
    topic: str = typer.Option(..., "--topic", help="Publish the items here."),
    data: str = typer.Option(
        ..., "--data", help="A data set: module:function or a .npz (x and optional y)."
    ),
    rate: float = typer.Option(100.0, "--rate", min=0.0, help="Items per second (0: unpaced)."),
    count: int | None = typer.Option(None, "--count", min=1, help="Stop after this many items."),
    loop: bool = typer.Option(False, "--loop", help="Start again at the end of the data."),
    prefix: str | None = typer.Option(
        None,
        "--id-prefix",
        help="Item ids are <prefix>-<n> (default: feed-<random hex>, new each run: a dispatcher "
        "that finished an id does not process it again).",
    ),
) -> None:
    """Publish a data set as items {"data": [...], "id": "<prefix>-<n>", "label": "..."}."""
    from fogline.cli._feed import Pacer, bodies, id_prefix, load_items
    from fogline.transport.mqtt import MqttMessage, MqttPublisher, Topic

    try:
        target = Topic(topic)
    except ValueError as exc:
        raise ConfigError(f"--topic: {exc}") from exc
    x, y = load_items(data)
    prefix = id_prefix(prefix)
    stop = _stop_on_signals()
    sent = 0
    pacer = Pacer(rate)
    started = time.monotonic()
    with MqttPublisher(broker) as publisher:
        for item, body in bodies(x, y, prefix, count=count, loop=loop):
            if not pacer.wait(stop):
                break
            publisher.publish(MqttMessage(target, body, user_properties=(("item-id", item),)))
            sent += 1
    took = time.monotonic() - started
    console_err.print(
        f"published {sent} item(s) to {topic} in {took:.1f} s (ids {prefix}-0 to {prefix}-{sent - 1})",
        highlight=False,
        soft_wrap=True,
    )
