"""etem.train"""
