"""How fogline's processes reach each other: today MQTT 5 (:mod:`fogline.transport.mqtt`).

This layer knows brokers, topics, connections and delivery; it knows nothing
of what the messages mean (the fleet's topics and bodies are in the protocol
above it), and importing it loads neither numpy nor ONNX.
"""

__all__: list[str] = []
