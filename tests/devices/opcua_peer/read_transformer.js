// Independent OPC UA peer for tests/devices/test_transformer_server.py (node-opcua).
// Usage: node read_transformer.js <endpointUrl> <namespaceUri>
// Connects without security, browses Objects, resolves the namespace index from its URI,
// reads YPTR1.HotSpotTemp and YPTR1.Loading, writes a good (250 kW) and a bad (-1 kW)
// site import limit, and prints one line "RESULT <json>" (node-opcua logs to stdout too).
"use strict";
const {
  OPCUAClient,
  AttributeIds,
  DataType,
  MessageSecurityMode,
  SecurityPolicy,
} = require("node-opcua");

async function main() {
  const [endpointUrl, namespaceUri] = process.argv.slice(2);
  const client = OPCUAClient.create({
    applicationName: "migrid-opcua-peer",
    securityMode: MessageSecurityMode.None,
    securityPolicy: SecurityPolicy.None,
    endpointMustExist: false,
    connectionStrategy: { maxRetry: 0, initialDelay: 100, maxDelay: 200 },
  });
  await client.connect(endpointUrl);
  const session = await client.createSession();
  try {
    const browsed = await session.browse("ns=0;i=85");
    const objects = browsed.references.map((r) => r.browseName.name);
    const namespaces = await session.readNamespaceArray();
    const ns = namespaces.indexOf(namespaceUri);
    const read = async (id) => {
      const dv = await session.read({ nodeId: `ns=${ns};s=${id}`, attributeId: AttributeIds.Value });
      return { status: dv.statusCode.name, value: dv.value.value };
    };
    const write = async (value) => {
      const st = await session.write({
        nodeId: `ns=${ns};s=Transformer.SiteImportLimit`,
        attributeId: AttributeIds.Value,
        value: { value: { dataType: DataType.Double, value } },
      });
      return st.name;
    };
    const result = {
      objects,
      namespaceIndex: ns,
      HotSpotTemp: await read("YPTR1.HotSpotTemp"),
      Loading: await read("YPTR1.Loading"),
      writeGood: await write(250),
      writeBad: await write(-1),
    };
    process.stdout.write("RESULT " + JSON.stringify(result) + "\n");
  } finally {
    await session.close();
    await client.disconnect();
  }
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + "\n");
  process.exit(1);
});
