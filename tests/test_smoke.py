from tests.support import Running


async def test_publish_reaches_stream(server: Running) -> None:
    consumer_id = await server.create_consumer(["news"])
    client = await server.stream(consumer_id)
    assert client.status == 200
    retry, info = await client.opening()
    assert retry == 3000
    assert info.inner["config"]["consumer_id"] == consumer_id
    await server.publish("news", "hello")
    frame = await client.data_frame()
    assert (frame.id, frame.event, frame.decoded) == ("1", "message", ["news", "hello"])
    client.close()
