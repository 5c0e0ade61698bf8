/*
 * unifrost browser client: a thin layer over EventSource that understands the
 * unifrost frames (["topic", "payload"], /unifrost/info, /unifrost/error,
 * /unifrost/closed). EventSource reconnects by itself and sends Last-Event-ID,
 * so the server replays whatever was missed.
 *
 *   const client = new UnifrostClient('/events', consumerId);
 *   client.on('message', (topic, payload, id) => ...);
 *   client.on('info', (info) => ...);         // {config, subscriptions}
 *   client.on('error', (error) => ...);       // {code, message, topic}
 *   client.on('closed', (reason) => ...);     // 'consumer closed' | 'replaced' | ...
 *   client.on('state', (state) => ...);       // 'connecting' | 'open' | 'closed'
 *   client.close();
 */
(function (root) {
  'use strict';

  var INFO = '/unifrost/info';
  var ERROR = '/unifrost/error';
  var CLOSED = '/unifrost/closed';
  // After these the server will not serve this consumer again on this page.
  var FINAL_REASONS = { 'consumer closed': true, replaced: true };

  function UnifrostClient(url, consumerId, options) {
    this.url = url + (url.indexOf('?') < 0 ? '?' : '&') + 'id=' + encodeURIComponent(consumerId);
    this.options = options || {};
    this.handlers = {};
    this.topicListeners = {};
    this.lastEventId = null;
    this.source = null;
    this.connect();
  }

  UnifrostClient.prototype.on = function (event, handler) {
    (this.handlers[event] = this.handlers[event] || []).push(handler);
    return this;
  };

  UnifrostClient.prototype.emit = function (event) {
    var args = Array.prototype.slice.call(arguments, 1);
    (this.handlers[event] || []).forEach(function (handler) { handler.apply(null, args); });
  };

  UnifrostClient.prototype.connect = function () {
    var self = this;
    var source = new EventSource(this.url, { withCredentials: !!this.options.withCredentials });
    this.source = source;
    this.emit('state', 'connecting');
    source.onopen = function () { self.emit('state', 'open'); };
    source.onerror = function () {
      self.emit('state', source.readyState === EventSource.CLOSED ? 'closed' : 'connecting');
    };
    source.addEventListener('message', function (event) { self.handle(event); });
  };

  UnifrostClient.prototype.handle = function (event) {
    var frame;
    try { frame = JSON.parse(event.data); } catch (e) { return; }
    if (!Array.isArray(frame) || frame.length !== 2) return;
    var topic = frame[0];
    var payload = frame[1];
    if (topic === INFO) {
      var info = JSON.parse(payload);
      this.listenToTopics(info.subscriptions || []);
      this.emit('info', info);
    } else if (topic === ERROR) {
      this.emit('error', JSON.parse(payload).error);
    } else if (topic === CLOSED) {
      this.emit('closed', payload);
      if (FINAL_REASONS[payload]) this.close();
    } else {
      if (event.lastEventId) this.lastEventId = event.lastEventId;
      this.emit('message', topic, payload, event.lastEventId);
    }
  };

  // With the server's `event_name: topic` option, topic frames arrive as
  // events named after their topic: listen to each subscribed topic too.
  UnifrostClient.prototype.listenToTopics = function (topics) {
    var self = this;
    topics.forEach(function (topic) {
      if (topic === 'message' || self.topicListeners[topic]) return;
      self.topicListeners[topic] = true;
      self.source.addEventListener(topic, function (event) { self.handle(event); });
    });
  };

  UnifrostClient.prototype.close = function () {
    if (this.source) this.source.close();
    this.emit('state', 'closed');
  };

  root.UnifrostClient = UnifrostClient;
  if (typeof module === 'object' && module.exports) module.exports = UnifrostClient;
})(typeof window !== 'undefined' ? window : this);
