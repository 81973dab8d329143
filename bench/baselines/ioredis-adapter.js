'use strict'
// Baseline: the old adapter's behaviour on ioredis, as it was configured
// (lazyConnect, maxRetriesPerRequest 3, no auto-pipelining). Each Redis
// command is awaited on its own, exactly as the old code did.
const Redis = require('ioredis')
const { TTL, encode, decode, orgKey, keys } = require('./legacy')

class IoredisOldAdapter {
  constructor({ url, keyPrefix = 'bench' }) {
    this.k = keys(keyPrefix)
    this.redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 3, connectTimeout: 10000 })
  }

  async ready() {
    await this.redis.connect()
  }

  async getConversationContext(orgId, phone) {
    return decode(await this.redis.hget(this.k.contexts, orgKey(orgId, phone)))
  }

  async setConversationContext(orgId, phone, messages) {
    await this.redis.hset(this.k.contexts, orgKey(orgId, phone), encode(messages))
    await this.redis.expire(this.k.contexts, TTL.conversationContext)
    return true
  }

  async getPhoneToLeadMapping(phone) {
    return decode(await this.redis.get(this.k.phoneToLead(phone)))
  }

  async setPhoneToLeadMapping(phone, leadId) {
    await this.redis.setex(this.k.phoneToLead(phone), TTL.leadData, encode(leadId))
    await this.redis.setex(this.k.leadToPhone(leadId), TTL.leadData, encode(phone))
    return true
  }

  async close() {
    await this.redis.quit()
  }
}

module.exports = { IoredisOldAdapter }
