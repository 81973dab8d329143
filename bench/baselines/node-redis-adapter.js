'use strict'
// Baseline: the old adapter's behaviour on node-redis v5 (`createClient`),
// same keys, same encoding, same one-await-per-command sequence.
const { createClient } = require('redis')
const { TTL, encode, decode, orgKey, keys } = require('./legacy')

class NodeRedisOldAdapter {
  constructor({ url, keyPrefix = 'bench' }) {
    this.k = keys(keyPrefix)
    this.client = createClient({ url })
    this.client.on('error', () => {}) // reported through the failing command instead
  }

  async ready() {
    await this.client.connect()
  }

  async getConversationContext(orgId, phone) {
    return decode(await this.client.hGet(this.k.contexts, orgKey(orgId, phone)))
  }

  async setConversationContext(orgId, phone, messages) {
    await this.client.hSet(this.k.contexts, orgKey(orgId, phone), encode(messages))
    await this.client.expire(this.k.contexts, TTL.conversationContext)
    return true
  }

  async getPhoneToLeadMapping(phone) {
    return decode(await this.client.get(this.k.phoneToLead(phone)))
  }

  async setPhoneToLeadMapping(phone, leadId) {
    await this.client.setEx(this.k.phoneToLead(phone), TTL.leadData, encode(leadId))
    await this.client.setEx(this.k.leadToPhone(leadId), TTL.leadData, encode(phone))
    return true
  }

  async close() {
    await this.client.close()
  }
}

module.exports = { NodeRedisOldAdapter }
