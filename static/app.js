// The browser side of a call: token, session, WebRTC offer/answer, trickle ICE, and the event WebSocket.
// The views beside the call (preferences, history, usage) live in static/views/.
import { accessToken, api } from "/static/api.js";
import { startViews } from "/static/views/tabs.js";

const $ = (id) => document.getElementById(id);

const ui = {
  connect: $("connect"), hangup: $("hangup"), status: $("status"),
  micLevel: $("mic-level"), speakerLevel: $("speaker-level"), botSpeaking: $("bot-speaking"),
  transcript: $("transcript"), interim: $("interim"), events: $("events"), audio: $("remote-audio"),
  avatar: $("avatar"),
  usageConnected: $("usage-connected"), usageMic: $("usage-mic"), usageSpeech: $("usage-speech"),
  quotaMeter: $("quota-meter"), quotaLeft: $("quota-left"), quotaWarning: $("quota-warning"),
  chatForm: $("chat-form"), chatText: $("chat-text"), chatSend: $("chat-send"),
};

// Exposed for tests and for debugging in the console.
window.voiceCall = { pc: null, sessionId: null, events: [], token: null };

function setStatus(state) {
  ui.status.textContent = state;
  ui.status.dataset.state = state;
}

function logEvent(event) {
  window.voiceCall.events.push(event);
  const item = document.createElement("li");
  item.textContent = JSON.stringify(event);
  ui.events.prepend(item);
  while (ui.events.children.length > 200) ui.events.lastChild.remove();
}

function meterLoop(stream, meter) {
  const context = new AudioContext();
  const analyser = context.createAnalyser();
  analyser.fftSize = 512;
  context.createMediaStreamSource(stream).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  const tick = () => {
    if (context.state === "closed") return;
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const s of samples) sum += s * s;
    meter.value = Math.min(1, Math.sqrt(sum / samples.length) * 4);
    requestAnimationFrame(tick);
  };
  tick();
  return context;
}

function addLine(who, text) {
  const item = document.createElement("li");
  item.className = who;
  item.textContent = text;
  ui.transcript.append(item);
  return item;
}

let agentLine = null;

function onEvent(event) {
  logEvent(event);
  switch (event.type) {
    case "state":
      setStatus(event.state);
      if (event.state === "ended") teardown();
      break;
    case "transcript":
      if (event.final) { ui.interim.textContent = ""; addLine("user", event.text); agentLine = null; }
      else ui.interim.textContent = event.text;
      break;
    case "agent_text":
      if (!agentLine) agentLine = addLine("agent", "");
      if (event.final) { agentLine.textContent = event.text; agentLine = null; }
      else agentLine.textContent += event.delta ?? "";
      break;
    case "bot_speaking":
      ui.botSpeaking.hidden = !event.speaking;
      break;
    case "usage":
      showUsage(event);
      break;
    case "quota_warning":
      ui.quotaWarning.hidden = false;
      ui.quotaWarning.textContent = event.level === "30_seconds"
        ? `Less than 30 s of ${event.usage_type.replaceAll("_", " ")} left`
        : `80% of this month's ${event.usage_type.replaceAll("_", " ")} used`;
      break;
    case "error":
      console.warn("call error", event);
      break;
  }
}

function showUsage(event) {
  const track = (name) => event.tracks.find((t) => t.track === name)?.seconds ?? 0;
  ui.usageConnected.textContent = event.connected_seconds.toFixed(1);
  ui.usageMic.textContent = track("mic").toFixed(1);
  ui.usageSpeech.textContent = track("speech").toFixed(1);
  // The scarcest time quota is the one that will end the call.
  let tightest = null;
  for (const q of Object.values(event.quota || {})) {
    if (q.limit_seconds === undefined || q.limit_seconds === 0) continue;
    const share = q.remaining_seconds / q.limit_seconds;
    if (tightest === null || share < tightest.share) tightest = { share, left: q.remaining_seconds };
  }
  if (tightest) {
    ui.quotaMeter.value = tightest.share;
    ui.quotaLeft.textContent = `${Math.floor(tightest.left)} s`;
  }
}

let micContext = null, speakerContext = null, ws = null, localStream = null;

async function sessionBody() {
  const avatarParam = new URLSearchParams(location.search).get("avatar");
  if (avatarParam !== null) return { avatar: avatarParam !== "0" };
  const me = await api("GET", "/api/v1/users/me");
  return me.preferences_saved ? {} : { avatar: true };
}

async function connect() {
  ui.connect.disabled = true;
  setStatus("connecting");
  try {
    window.voiceCall.token = await accessToken();
    // The avatar (rendered here, or the LiveAvatar relayed through this server): `?avatar=1` / `?avatar=0`
    // decide for this call; else the saved preferences (Preferences view) do, and until the user saves
    // any the page shows the avatar (the API's own default stays no avatar).
    const session = await api("POST", "/api/v1/sessions", await sessionBody());
    window.voiceCall.sessionId = session.session_id;
    const base = `/api/v1/sessions/${session.session_id}`;

    const scheme = location.protocol === "https:" ? "wss" : "ws";
    ws = new WebSocket(`${scheme}://${location.host}${base}/events?access_token=${encodeURIComponent(window.voiceCall.token)}`);
    ws.onmessage = (message) => onEvent(JSON.parse(message.data));
    await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });

    localStream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    micContext = meterLoop(localStream, ui.micLevel);

    // `?relay=1` sends all media through the session's TURN servers (iceTransportPolicy "relay"): it shows
    // TURN works from this network, and the tests use it to prove the relay path.
    const relayOnly = new URLSearchParams(location.search).get("relay") === "1";
    const pc = new RTCPeerConnection({ iceServers: session.ice_servers, iceTransportPolicy: relayOnly ? "relay" : "all" });
    window.voiceCall.pc = pc;
    for (const track of localStream.getAudioTracks()) pc.addTrack(track, localStream);
    // The avatar: video only comes our way.
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.ontrack = (event) => {
      const stream = new MediaStream([event.track]);
      if (event.track.kind === "video") {
        ui.avatar.srcObject = stream;
        return;
      }
      ui.audio.srcObject = stream;
      speakerContext = meterLoop(stream, ui.speakerLevel);
    };
    pc.onicecandidate = (event) => {
      const c = event.candidate;
      api("POST", `${base}/ice`, c ? { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex }
                                   : { candidate: "", sdpMid: null, sdpMLineIndex: null })
        .catch((error) => logEvent({ type: "client_error", message: String(error) }));
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed") setStatus("error");
    };

    await pc.setLocalDescription(await pc.createOffer());
    const answer = await api("POST", `${base}/offer`, { sdp: pc.localDescription.sdp, type: "offer" });
    await pc.setRemoteDescription(answer);
    ui.hangup.disabled = false;
    ui.chatText.disabled = false;
    ui.chatSend.disabled = false;
  } catch (error) {
    logEvent({ type: "client_error", message: String(error) });
    setStatus("error");
    teardown();
  }
}

function teardown() {
  window.voiceCall.pc?.close();
  localStream?.getTracks().forEach((t) => t.stop());
  micContext?.close(); speakerContext?.close();
  micContext = speakerContext = localStream = null;
  ui.connect.disabled = false;
  ui.hangup.disabled = true;
  ui.chatText.disabled = true;
  ui.chatSend.disabled = true;
  document.dispatchEvent(new CustomEvent("voicecall:ended"));  // History and Usage views may now be stale
}

async function hangup() {
  ui.hangup.disabled = true;
  const id = window.voiceCall.sessionId;
  try { if (id) await api("DELETE", `/api/v1/sessions/${id}`); }
  catch (error) { logEvent({ type: "client_error", message: String(error) }); }
  teardown();
  setStatus("ended");
}

async function sendChat(event) {
  event.preventDefault();
  const text = ui.chatText.value.trim();
  if (!text || !window.voiceCall.sessionId) return;
  ui.chatText.value = "";
  try { await api("POST", `/api/v1/sessions/${window.voiceCall.sessionId}/messages`, { text }); }
  catch (error) { logEvent({ type: "client_error", message: String(error) }); }
}

ui.connect.addEventListener("click", connect);
ui.hangup.addEventListener("click", hangup);
ui.chatForm.addEventListener("submit", sendChat);
startViews();
