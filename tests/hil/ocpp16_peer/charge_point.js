// A scripted OCPP 1.6 charge point for tests/hil/test_external_stations.py, run by the
// batch mode of em-ocpp-chargepoint-simulator (an independent simulator, not ours):
//
//   CSMS_URL=ws[s]://[<id>:<password>@]host:port/<id> \
//     node node_modules/em-ocpp-chargepoint-simulator/build/src/main.js charge_point.js
//
// (the script path is relative to the working folder). TLS: NODE_EXTRA_CA_CERTS trusts the
// CSMS's CA; SSL_CLIENT_KEYSTORE='[{"id": "<id>", "cert": "...", "key": "..."}]' gives a
// client certificate (security profile 3). Boot, heartbeat, status, authorize, start a
// transaction, meter values, wait up to WAIT_PROFILE_S for a TxProfile, stop. Every
// exchange is printed as one line "RESULT {"kind": ..., "payload": ...}"; exit 0 when a
// TxProfile arrived, 2 when none did, 1 on an error (the simulator swallows errors).
module.exports = async function (connect) {
  const url = process.env.CSMS_URL;
  const waitMs = parseFloat(process.env.WAIT_PROFILE_S || "10") * 1000;
  const idTag = process.env.ID_TAG || "EM-TAG-1";
  const out = (kind, payload) =>
    console.log("RESULT " + JSON.stringify({ kind, payload: payload === undefined ? null : payload }));
  const now = () => new Date().toISOString();
  let cp;
  let code = 0;
  try {
    cp = await connect(url);
    out("connected", url.replace(/\/\/[^@/]*@/, "//"));
    let gotTxProfile;
    const txProfile = new Promise((resolve) => { gotTxProfile = resolve; });
    // SetChargingProfile has no answerXxx helper in the simulator; those helpers only
    // register a callback in cp.registeredCallbacks, which takes any action.
    cp.registeredCallbacks.set("SetChargingProfile", {
      cb: (request) => {
        out("SetChargingProfile", request.payload);
        cp.sendResponse(request.uniqueId, { status: "Accepted" });
        const purpose = request.payload.csChargingProfiles.chargingProfilePurpose;
        if (purpose === "TxProfile") gotTxProfile(request.payload);
      },
    });
    out("BootNotification", await cp.sendBootnotification({
      chargePointVendor: "em-simulator", chargePointModel: "scripted-1.6", // CiString20
    }));
    out("Heartbeat", await cp.sendHeartbeat());
    await cp.sendStatusNotification({ connectorId: 0, errorCode: "NoError", status: "Available" });
    await cp.sendStatusNotification({ connectorId: 1, errorCode: "NoError", status: "Available" });
    out("Authorize", await cp.sendAuthorize({ idTag }));
    await cp.sendStatusNotification({ connectorId: 1, errorCode: "NoError", status: "Preparing" });
    const tx = await cp.startTransaction({ connectorId: 1, idTag, meterStart: 1000, timestamp: now() });
    out("StartTransaction", tx);
    await cp.sendStatusNotification({ connectorId: 1, errorCode: "NoError", status: "Charging" });
    const meter = (wh, w) => cp.meterValues({
      connectorId: 1,
      transactionId: tx.transactionId,
      meterValue: [{
        timestamp: now(),
        sampledValue: [
          { value: String(wh), context: "Sample.Periodic", measurand: "Energy.Active.Import.Register", unit: "Wh" },
          { value: String(w), context: "Sample.Periodic", measurand: "Power.Active.Import", unit: "W" },
        ],
      }],
    });
    out("MeterValues", await meter(1000, 11000));
    const profile = await Promise.race([txProfile, cp.sleep(waitMs).then(() => null)]);
    out("TxProfile", profile);
    out("MeterValues", await meter(1050, 6900));
    out("StopTransaction", await cp.stopTransaction({
      transactionId: tx.transactionId, meterStop: 1100, timestamp: now(), reason: "EVDisconnected",
    }));
    await cp.sendStatusNotification({ connectorId: 1, errorCode: "NoError", status: "Finishing" });
    await cp.sendStatusNotification({ connectorId: 1, errorCode: "NoError", status: "Available" });
    if (profile === null) code = 2;
  } catch (err) {
    out("error", String((err && err.message) || err));
    code = 1;
  } finally {
    if (cp) cp.close();
  }
  setTimeout(() => process.exit(code), 200);
};
